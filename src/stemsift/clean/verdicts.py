"""Human verdicts (`filter.verdicts`): a CSV of `track,stem,verdict` rows that overrule the cleaner's scores.

`stem` is a label (vocals, bass, drums, other) or `song`; `verdict` is `keep` or `drop`. A song verdict sets
every selection row of the song; a stem verdict sets the rows of that one stem (as target and as interferer of
every model) and wins over its song's verdict. `keep` restores what the baseline selection allowed, `drop`
unkeeps. The listening report (`stemsift listen`) downloads files in exactly this format.
"""
from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from stemsift import LABELS

SONG = "song"
VERDICTS = ("keep", "drop")
COLUMNS = ("track", "stem", "verdict")
TABLE = {"track_id": "string", "stem": "string", "verdict": "string", "score_decision": "string", "overrode": "bool",
         "file": "string"}
ALIASES = {"track_id": "track", "label": "stem", "stem-or-song": "stem", "stem_or_song": "stem", "decision": "verdict"}  # column names we also accept


class VerdictError(ValueError):
    """A bad verdicts file; the message is one line naming the file, the row and the fault."""


def read_verdicts(path: str | Path, known_tracks: set[str]) -> pd.DataFrame:
    """Parse and check a verdicts CSV against the training songs; rows (track_id, stem, verdict, line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise VerdictError(f"{path}: filter.verdicts file not found") from None
    reader = csv.DictReader(text.splitlines())
    header = [ALIASES.get((h or "").strip().lower(), (h or "").strip().lower()) for h in reader.fieldnames or []]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise VerdictError(f"{path}: missing column {missing[0]!r} (expected header {','.join(COLUMNS)})")
    rows, seen = [], {}
    for line, raw in enumerate(reader, start=2):
        r = {ALIASES.get(k.strip().lower(), k.strip().lower()): (v or "").strip() for k, v in raw.items() if k}
        if not any(r.values()):
            continue
        track, stem, verdict = r["track"], r["stem"].lower() or SONG, r["verdict"].lower()
        if track not in known_tracks:
            raise VerdictError(f"{path}:{line}: unknown track {track!r} (not a training song of the stem set)")
        if stem not in (*LABELS, SONG):
            raise VerdictError(f"{path}:{line}: unknown stem {stem!r} (use {', '.join(LABELS)} or {SONG})")
        if verdict not in VERDICTS:
            raise VerdictError(f"{path}:{line}: unknown verdict {verdict!r} (use keep or drop)")
        if (track, stem) in seen and seen[(track, stem)][0] != verdict:
            raise VerdictError(f"{path}:{line}: {track}/{stem} is {verdict} here but "
                               f"{seen[(track, stem)][0]} on line {seen[(track, stem)][1]}")
        seen[(track, stem)] = (verdict, line)
        rows.append((track, stem, verdict, line))
    return pd.DataFrame(rows, columns=["track_id", "stem", "verdict", "line"]).drop_duplicates(["track_id", "stem"])


def _decision(sel: pd.DataFrame, track: str, stem: str) -> str:
    """What the scores decided: a song is kept if any model keeps it; a stem if its own model draws it."""
    rows = sel[sel.track_id == track]
    if stem != SONG:
        rows = rows[(rows.label == stem) & (rows.target == stem)]
    return "keep" if rows.keep.any() else "drop"


def apply_verdicts(sel: pd.DataFrame, baseline: pd.DataFrame, verdicts: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The selection with the verdicts applied (song verdicts first, then stem verdicts), and the verdicts
    table with what the scores had decided (`score_decision`) and whether the verdict changed it (`overrode`)."""
    base = baseline.set_index(["track_id", "label", "target", "role"]).keep
    out = sel.copy()
    allowed = out.set_index(["track_id", "label", "target", "role"]).index.map(base).fillna(False).astype(bool).to_numpy()
    before = [_decision(sel, t, s) for t, s in zip(verdicts.track_id, verdicts.stem)]
    for stem_level in (False, True):
        for v in verdicts[(verdicts.stem != SONG) == stem_level].itertuples():
            rows = (out.track_id == v.track_id).to_numpy()
            if stem_level:
                rows &= (out.label == v.stem).to_numpy()
            out.loc[rows, "keep"] = allowed[rows] if v.verdict == "keep" else False
    table = verdicts.assign(score_decision=before)
    table["overrode"] = table.score_decision != table.verdict
    return out, table.drop(columns="line")


def with_verdicts(sel: pd.DataFrame, baseline: pd.DataFrame, path: str | None) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The filter's hook: (selection, verdicts table for the catalogue — empty without a file, note)."""
    if not path:
        return sel, pd.DataFrame({c: pd.Series(dtype=t) for c, t in TABLE.items()}), ""
    sel, table = apply_verdicts(sel, baseline, read_verdicts(path, set(baseline.track_id)))
    return sel, table.assign(file=str(path)), f"; {len(table)} human verdicts from {path} ({int(table.overrode.sum())} overrode the scores)"


def verdict_metrics(table: pd.DataFrame, path: str | None) -> dict:
    """Short keys for metrics/filter.json (none without a verdicts file)."""
    if not path:
        return {}
    counts = {f"{'song' if s == SONG else 'stem'}_{v}": 0 for s in (SONG, "x") for v in VERDICTS}
    for s, v in zip(table.stem, table.verdict):
        counts[f"{'song' if s == SONG else 'stem'}_{v}"] += 1
    return {"verdicts": {"file": str(path), "rows": int(len(table)), **counts, "overrode": int(table.overrode.sum())}}
