"""The catalogue: one DuckDB file assembled from the stages' own parquet tables, queryable with plain SQL.

Tables that later stages fill (refined labels, scores, selections, runs) exist from the start, empty, so
queries written against them keep working as the pipeline grows.
"""
from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from stemsift import LABELS
from stemsift.stemset import StemSet, atomic_file

TRUTH = "truth.parquet"

# name -> DuckDB column definitions; the contract later stages append to.
SCHEMA: dict[str, str] = {
    "stemsets": "stemset VARCHAR, root VARCHAR, tracks INTEGER, stems INTEGER",
    "tracks": "stemset VARCHAR, track_id VARCHAR, split VARCHAR, source VARCHAR, sample_rate INTEGER, "
              "channels INTEGER, frames BIGINT, duration_s DOUBLE, mixture_path VARCHAR, sha1 VARCHAR, meta JSON",
    "stems": "stemset VARCHAR, track_id VARCHAR, split VARCHAR, label VARCHAR, path VARCHAR, sample_rate INTEGER, "
             "channels INTEGER, frames BIGINT, sha1 VARCHAR, rms_db DOUBLE, silent BOOLEAN",
    # kind: given | refined | true; iteration: refinement round (0 for given / true)
    "labels": "stemset VARCHAR, track_id VARCHAR, label VARCHAR, kind VARCHAR, iteration INTEGER, instruments VARCHAR[]",
    "truth": "track_id VARCHAR, label VARCHAR, defect VARCHAR, kind VARCHAR, params JSON, true_instruments VARCHAR[]",
    "refined_labels": "track_id VARCHAR, label VARCHAR, iteration INTEGER, "
                      + ", ".join(f"p_{c} DOUBLE" for c in LABELS) + ", refined VARCHAR[]",
    "scores": "cleaner VARCHAR, config_hash VARCHAR, track_id VARCHAR, label VARCHAR, score DOUBLE, song_score DOUBLE",
    # unlearning: delta = loss change of training song track_id (target model `target`) after unlearning reference_id
    "attribution": "cleaner VARCHAR, config_hash VARCHAR, mode VARCHAR, track_id VARCHAR, reference_id VARCHAR, "
                   "target VARCHAR, delta DOUBLE",
    # train_set: baseline | cleaned | oracle | reference; role: target | interferer (see separate/selection.py)
    "selections": "train_set VARCHAR, cleaner VARCHAR, config_hash VARCHAR, keep_ratio DOUBLE, mode VARCHAR, "
                  "track_id VARCHAR, label VARCHAR, target VARCHAR, role VARCHAR, keep BOOLEAN",
    # human verdicts the filter applied (filter.verdicts); score_decision: what the scores alone decided
    "verdicts": "cleaner VARCHAR, config_hash VARCHAR, file VARCHAR, track_id VARCHAR, stem VARCHAR, verdict VARCHAR, "
                "score_decision VARCHAR, overrode BOOLEAN",
    # stage audit: duplicates / near duplicates (other_track_id; leak = across splits), bad mixtures, silent, clipped
    "audit": "stemset VARCHAR, kind VARCHAR, track_id VARCHAR, label VARCHAR, split VARCHAR, other_track_id VARCHAR, "
             "other_split VARCHAR, leak BOOLEAN, value DOUBLE",
    "runs": "run_name VARCHAR, train_set VARCHAR, mlflow_run_id VARCHAR, stemset_hash VARCHAR, params_hash VARCHAR, "
            "method VARCHAR, seed INTEGER, " + ", ".join(f"sdr_{c} DOUBLE" for c in LABELS) + ", sdr_avg DOUBLE, "
            "sdr_utt_avg DOUBLE, train_seconds DOUBLE, created TIMESTAMP",
}


def _stemset_frames(name: str, ss: StemSet, truth: pd.DataFrame | None) -> dict[str, pd.DataFrame]:
    tracks = ss.tracks.assign(stemset=name, duration_s=ss.tracks.frames / ss.tracks.sample_rate)
    stems = ss.stems.assign(stemset=name)
    given = stems[["stemset", "track_id", "label"]].assign(kind="given", iteration=0)
    given["instruments"] = [[lb] for lb in given.label]
    frames = [given]
    if truth is not None:
        true = truth[["track_id", "label", "true_instruments"]].rename(columns={"true_instruments": "instruments"})
        frames.append(true.assign(stemset=name, kind="true", iteration=0))
    elif (tracks.source == "synthetic").all():  # rendered stems hold exactly their instrument
        frames.append(given.assign(kind="true"))
    labels = pd.concat(frames, ignore_index=True)
    labels["instruments"] = [list(v) for v in labels.instruments]
    return {
        "stemsets": pd.DataFrame([{"stemset": name, "root": str(ss.root), "tracks": len(ss.tracks), "stems": len(ss.stems)}]),
        "tracks": tracks, "stems": stems, "labels": labels,
    }


def build_catalogue(out: str | Path, stemsets: dict[str, str | Path],
                    extra: dict[str, list[str | Path]] | None = None) -> Path:
    """Write ``out`` atomically from named stem-set folders (their manifest, tracks and truth parquet)
    and extra parquet files per table (scores, selections, runs, refined labels, ...)."""
    out = Path(out)
    parts: dict[str, list[pd.DataFrame]] = {t: [] for t in SCHEMA}
    for name, root in stemsets.items():
        ss = StemSet(root)
        truth = pd.read_parquet(Path(root) / TRUTH) if (Path(root) / TRUTH).is_file() else None
        if truth is not None:
            parts["truth"].append(truth)
        for table, df in _stemset_frames(name, ss, truth).items():
            parts[table].append(df)
    for table, paths in (extra or {}).items():
        if table not in SCHEMA:
            raise ValueError(f"unknown catalogue table {table!r} (known: {', '.join(SCHEMA)})")
        parts[table] += [pd.read_parquet(p) for p in paths]
    with atomic_file(out) as tmp:
        con = duckdb.connect(str(tmp))
        try:
            for table, cols in SCHEMA.items():
                con.execute(f"CREATE TABLE {table} ({cols})")
                names = [c.split()[0] for c in cols.split(", ")]
                for df in parts[table]:
                    con.register("_part", df[[n for n in names if n in df.columns]])
                    picked = ", ".join(n for n in names if n in df.columns)
                    con.execute(f"INSERT INTO {table} ({picked}) SELECT {picked} FROM _part")
                    con.unregister("_part")
            con.execute(VIEWS)
        finally:
            con.close()
    return out


VIEWS = """
CREATE VIEW stem_truth AS
SELECT s.*, coalesce(t.defect, 'clean') AS defect, t.kind AS defect_kind, t.true_instruments
FROM stems s LEFT JOIN truth t ON s.stemset = 'contaminated' AND s.track_id = t.track_id AND s.label = t.label;
CREATE VIEW song_defects AS
SELECT track_id, coalesce(max(CASE WHEN defect <> 'clean' THEN defect END), 'clean') AS defect,
       count(*) FILTER (WHERE defect <> 'clean') AS defective_stems
FROM truth GROUP BY track_id;
"""

# The README's example queries; a test runs every one.
EXAMPLE_QUERIES: dict[str, str] = {
    "songs and stems per defect": """
        SELECT d.defect, count(*) AS songs, sum(d.defective_stems)::INT AS defective_stems
        FROM song_defects d GROUP BY d.defect ORDER BY songs DESC""",
    "stems per label and split": """
        SELECT split, label, count(*) AS stems, round(avg(rms_db), 1) AS mean_rms_db, sum(silent::INT)::INT AS silent
        FROM stems WHERE stemset = 'contaminated' GROUP BY split, label ORDER BY split, label""",
    "stems whose content is not their label": """
        SELECT track_id, label, defect, kind, true_instruments
        FROM truth WHERE true_instruments <> [label] ORDER BY track_id, label""",
    "worst-scored stems per cleaner": """
        SELECT s.cleaner, s.track_id, s.label, round(s.score, 3) AS score, coalesce(t.defect, 'unknown') AS defect
        FROM scores s LEFT JOIN truth t USING (track_id, label)
        QUALIFY row_number() OVER (PARTITION BY s.cleaner ORDER BY s.score) <= 10
        ORDER BY s.cleaner, s.score""",
    "which clean reference song vouches most for each training song (unlearning)": """
        SELECT a.track_id, a.reference_id, round(avg(a.delta), 6) AS delta_mean_over_targets,
               coalesce(d.defect, 'unknown') AS defect
        FROM attribution a LEFT JOIN song_defects d USING (track_id)
        GROUP BY a.track_id, a.reference_id, d.defect
        QUALIFY row_number() OVER (PARTITION BY a.track_id ORDER BY avg(a.delta) DESC) = 1
        ORDER BY delta_mean_over_targets LIMIT 20""",
    "audit findings: leakage across splits first": """
        SELECT kind, split, track_id, coalesce(label, '') AS label, other_split, other_track_id, round(value, 3) AS value
        FROM audit ORDER BY leak DESC, kind, track_id""",
    "human verdicts that overrode the scores": """
        SELECT v.track_id, v.stem, v.verdict, v.score_decision, coalesce(d.defect, 'unknown') AS defect
        FROM verdicts v LEFT JOIN song_defects d USING (track_id) WHERE v.overrode ORDER BY v.track_id, v.stem""",
}


def query(db: str | Path, sql: str) -> pd.DataFrame:
    """Run read-only SQL against the catalogue and return a DataFrame."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).df()
    finally:
        con.close()
