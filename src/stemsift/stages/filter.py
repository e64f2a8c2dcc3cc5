"""Stage `filter`: the selections of every training set — baseline (contaminated train as is), cleaned (the
score.cleaner's scores at keep ratio filter.ratio, unified or per target), oracle (truly clean songs;
simulated truth) and reference (the clean reference split alone) — and the filtered stem set: the cleaned
set materialised in MUSDB18-HQ layout with hard links (the dataset version other projects `dvc import`)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from stemsift import SPLITS
from stemsift.catalogue import TRUTH
from stemsift.clean.metrics import song_truth
from stemsift.clean.select import filtered_selection
from stemsift.params import ContaminateParams, FilterParams, ScoreParams, params_hash, stage_params
from stemsift.separate.selection import given_selection, summary
from stemsift.stemset import StemSet, StemSetWriter, atomic_dir, atomic_file

METRICS = Path("metrics/filter.json")
SELECTION = "selection.parquet"


def clean_songs(truth: pd.DataFrame) -> list[str]:
    """Songs whose every stem is clean according to the simulated truth (the oracle's training set)."""
    ok = truth.groupby("track_id").defect.agg(lambda d: bool((d == "clean").all()))
    return sorted(ok[ok].index)


def load_scores(folder: str | Path, cleaner: str) -> pd.DataFrame:
    path = Path(folder) / f"scores-{cleaner}.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing — score.cleaner={cleaner!r} must be listed in score.cleaners")
    return pd.read_parquet(path)


def cleaned_selection(baseline: pd.DataFrame, scores: pd.DataFrame | None, f: FilterParams) -> tuple[pd.DataFrame, str]:
    if scores is None:
        return baseline.copy(), "no cleaner configured (score.cleaner=none): the cleaned set keeps every stem"
    return filtered_selection(baseline, scores, float(f.ratio), f.mode), f"kept ratio {f.ratio} ({f.mode})"


def build_selections(ss: StemSet, truth: pd.DataFrame | None, f: FilterParams,
                     scores: pd.DataFrame | None = None) -> tuple[dict[str, pd.DataFrame], str]:
    train = ss.track_ids("train")
    sets = {"baseline": given_selection(ss.stems, train)}
    sets["cleaned"], note = cleaned_selection(sets["baseline"], scores, f)
    sets["oracle"] = given_selection(ss.stems, clean_songs(truth) if truth is not None else train)
    sets["reference"] = given_selection(ss.stems, ss.track_ids("reference"))
    return sets, note


def write_filtered(ss: StemSet, sel: pd.DataFrame, out: str | Path) -> StemSet:
    """Every non-train song plus each train song some target model keeps, hard-linked (MUSDB18-HQ layout)."""
    kept = set(sel[sel.keep].track_id)
    with atomic_dir(out) as tmp:
        w = StemSetWriter(tmp, ss.sample_rate, ss.channels)
        for split in SPLITS:
            for tid in ss.track_ids(split):
                if split != "train" or tid in kept:
                    w.copy_track(ss, tid, link=True)
        w.close()
        sel[sel.track_id.isin(kept)].to_parquet(tmp / SELECTION, index=False)
    return StemSet(out)


def selection_quality(sel: pd.DataFrame, truth: pd.DataFrame | None) -> dict:
    """Share of the cleaned set's songs that are truly clean, and of the clean songs it kept."""
    if truth is None:
        return {}
    kind = song_truth(truth)
    kept = set(sel[sel.keep].track_id)
    clean = set(kind[kind == "clean"].index)
    removed = set(kind.index) - kept
    out = {"clean_share": round(len(kept & clean) / max(len(kept), 1), 4),
           "clean_kept": round(len(kept & clean) / max(len(clean), 1), 4)}
    for d in sorted(set(kind) - {"clean"}):
        bad = set(kind[kind == d].index)
        out[f"removed_{d}"] = round(len(bad & removed) / len(bad), 4)
    return out


def run(params: dict) -> dict[str, pd.DataFrame]:
    c = stage_params(params, "contaminate", ContaminateParams)
    s = stage_params(params, "score", ScoreParams)
    f = stage_params(params, "filter", FilterParams)
    ss = StemSet(c.out)
    truth = pd.read_parquet(Path(c.out) / TRUTH) if (Path(c.out) / TRUTH).is_file() else None
    scores = None if s.cleaner == "none" else load_scores(s.out, s.cleaner)
    sets, note = build_selections(ss, truth, f, scores)
    config = params_hash({"cleaner": s.cleaner, **params.get("filter", {})})
    with atomic_dir(f.out) as tmp:
        for name, sel in sets.items():
            sel.to_parquet(tmp / f"{name}.parquet", index=False)
        table = pd.concat([sel.assign(train_set=name, cleaner=s.cleaner if name == "cleaned" else name,
                                      config_hash=config, keep_ratio=f.ratio if name == "cleaned" else 1.0,
                                      mode=f.mode) for name, sel in sets.items()])
        table.to_parquet(tmp / "selections.parquet", index=False)
    filtered = write_filtered(ss, sets["cleaned"], f.stems)
    metrics = {"cleaner": s.cleaner, "ratio": f.ratio, "mode": f.mode,
               **{f"{name}_songs": summary(sel)["songs"] for name, sel in sets.items()},
               **selection_quality(sets["cleaned"], truth)}
    with atomic_file(METRICS) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"filter: {note}; songs kept: " + ", ".join(f"{k} {summary(v)['songs']}" for k, v in sets.items())
          + f"; filtered stem set: {len(filtered.tracks)} tracks -> {f.stems}")
    return sets
