"""Stage `filter`: the `cleaned` training set — the score.cleaner's scores at keep ratio filter.ratio, unified
or per target — materialised as the filtered stem set: MUSDB18-HQ layout, hard links into the contaminated
set, plus `selections.parquet` (which target model may draw which stem). This folder is the dataset
version other projects `dvc import`."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from stemsift import SPLITS
from stemsift.catalogue import TRUTH
from stemsift.clean.metrics import song_truth
from stemsift.clean.select import filtered_selection
from stemsift.params import ContaminateParams, FilterParams, ScoreParams, SelectParams, params_hash, stage_params
from stemsift.separate.selection import catalogue_rows, summary, typed
from stemsift.stemset import StemSet, StemSetWriter, atomic_dir, atomic_file

METRICS = Path("metrics/filter.json")
SELECTION = "selections.parquet"


def load_scores(folder: str | Path, cleaner: str) -> pd.DataFrame:
    path = Path(folder) / f"scores-{cleaner}.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing — score.cleaner={cleaner!r} must be listed in score.cleaners")
    return pd.read_parquet(path)


def cleaned_selection(baseline: pd.DataFrame, scores: pd.DataFrame | None, f: FilterParams) -> tuple[pd.DataFrame, str]:
    if scores is None:
        return baseline.copy(), "no cleaner configured (score.cleaner=none): the cleaned set keeps every stem"
    return filtered_selection(baseline, scores, float(f.ratio), f.mode), f"kept ratio {f.ratio} ({f.mode})"


def write_filtered(ss: StemSet, sel: pd.DataFrame, out: str | Path) -> StemSet:
    """Every non-train song plus each train song some target model keeps, hard-linked (MUSDB18-HQ layout),
    and the selection (rows of dropped songs included, unkept: what the cleaner decided about every song)."""
    kept = set(sel[sel.keep].track_id)
    with atomic_dir(out) as tmp:
        w = StemSetWriter(tmp, ss.sample_rate, ss.channels)
        for split in SPLITS:
            for tid in ss.track_ids(split):
                if split != "train" or tid in kept:
                    w.copy_track(ss, tid, link=True)
        w.close()
        sel.to_parquet(tmp / SELECTION, index=False)
    return StemSet(out)


def selection_quality(sel: pd.DataFrame, truth: pd.DataFrame | None) -> dict:
    """Share of the cleaned set's songs that are truly clean, of the clean songs kept, of each defect removed."""
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


def run(params: dict) -> pd.DataFrame:
    c = stage_params(params, "contaminate", ContaminateParams)
    sp = stage_params(params, "select", SelectParams)
    s = stage_params(params, "score", ScoreParams)
    f = stage_params(params, "filter", FilterParams)
    ss = StemSet(c.out)
    truth = pd.read_parquet(Path(c.out) / TRUTH) if (Path(c.out) / TRUTH).is_file() else None
    baseline = typed(pd.read_parquet(Path(sp.out) / "baseline.parquet"))
    scores = None if s.cleaner == "none" else load_scores(s.out, s.cleaner)
    sel, note = cleaned_selection(baseline, scores, f)
    config = params_hash({"cleaner": s.cleaner, **params.get("filter", {})})
    filtered = write_filtered(ss, catalogue_rows(sel, "cleaned", s.cleaner, config, f.ratio, f.mode), f.out)
    metrics = {"cleaner": s.cleaner, "ratio": f.ratio, "mode": f.mode, "baseline_songs": summary(baseline)["songs"],
               "cleaned_songs": summary(sel)["songs"], **selection_quality(sel, truth)}
    with atomic_file(METRICS) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"filter: {note}: {metrics['cleaned_songs']} of {metrics['baseline_songs']} training songs kept; "
          f"filtered stem set: {len(filtered.tracks)} tracks -> {f.out}")
    return sel
