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
from stemsift.clean.ratio import auto_keep
from stemsift.clean.select import filtered_selection
from stemsift.clean.verdicts import verdict_metrics, with_verdicts
from stemsift.params import ContaminateParams, FilterParams, ParamsError, ScoreParams, SelectParams, params_hash, stage_params
from stemsift.separate.selection import catalogue_rows, summary, typed
from stemsift.stemset import StemSet, StemSetWriter, atomic_dir, atomic_file

METRICS = Path("metrics/filter.json")
SELECTION = "selections.parquet"
VERDICTS = "verdicts.parquet"  # catalogue table `verdicts`: the human verdicts applied (empty without a file)


def load_scores(folder: str | Path, cleaner: str) -> pd.DataFrame:
    path = Path(folder) / f"scores-{cleaner}.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing — score.cleaner={cleaner!r} must be listed in score.cleaners")
    return pd.read_parquet(path)


def resolve_ratio(scores: pd.DataFrame, f: FilterParams, seed: int = 0) -> tuple[float, dict]:
    """The keep ratio: filter.ratio, or with `auto` the share of songs above the boundary of the two fitted score
    populations (the filter then keeps exactly those: the top-r songs)."""
    if f.ratio != "auto":
        return float(f.ratio), {}
    songs = scores.groupby("track_id")
    method = f.auto.method
    if method == "storey" and "song_p" not in scores and not scores.song_score.between(0, 1).all():
        method = "gmm"  # a cleaner without the reference songs' p-values (a fusion whose components all have a null)
        print("filter: note: filter.auto.method=storey needs song p-values against the reference songs, which only a "
              "fusion cleaner such as blind writes: the two-population cut (gmm) decides for this cleaner")
    a = auto_keep(songs.song_score.first(), method, seed, f.auto.min_songs, f.auto.min_separation, stems=scores,
                  min_weight=f.auto.min_weight, storey_lambda=f.auto.storey_lambda,
                  song_p=songs.song_p.first() if "song_p" in scores else None)
    if a.warning:
        print(f"filter: warning: filter.ratio=auto ({a.method}): {a.warning}")
    return a.ratio, a.metrics()


def cleaned_selection(baseline: pd.DataFrame, scores: pd.DataFrame | None, f: FilterParams,
                      seed: int = 0) -> tuple[pd.DataFrame, str, dict]:
    """The cleaned selection, a note for the log, and the automatic ratio's metrics (empty for a fixed r)."""
    if scores is None:
        return baseline.copy(), "no cleaner configured (score.cleaner=none): the cleaned set keeps every stem", {}
    ratio, auto = resolve_ratio(scores, f, seed)
    # the top-r songs by score (monotone, unlike a posterior of unequal-variance components far in the tail)
    note = f"kept ratio {ratio:.4g} ({f.mode}{', auto: ' + auto['auto_method'] if auto else ''})"
    return filtered_selection(baseline, scores, ratio, f.mode), note, auto


def write_filtered(ss: StemSet, sel: pd.DataFrame, out: str | Path, verdicts: pd.DataFrame | None = None) -> StemSet:
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
        if verdicts is not None:
            verdicts.to_parquet(tmp / VERDICTS, index=False)
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
    try:
        sel, note, auto = cleaned_selection(baseline, scores, f, s.seed)
    except ValueError as e:  # e.g. cleanlab asked of a cleaner without class probabilities
        raise ParamsError(f"{params.get('_path', 'params.yaml')}: {e}") from None
    sel, verdicts, vnote = with_verdicts(sel, baseline, f.verdicts)  # human verdicts overrule the scores
    block = {k: v for k, v in (params.get("filter") or {}).items() if not (k == "verdicts" and v is None)}
    config = params_hash({"cleaner": s.cleaner, **block})  # an unset verdicts key leaves the config hash as it was
    filtered = write_filtered(ss, catalogue_rows(sel, "cleaned", s.cleaner, config, auto.get("ratio_auto", f.ratio), f.mode), f.out,
                              verdicts.assign(cleaner=s.cleaner, config_hash=config))
    metrics = {"cleaner": s.cleaner, "ratio": auto.get("ratio_auto", f.ratio), "mode": f.mode, **auto, "baseline_songs": summary(baseline)["songs"],
               "cleaned_songs": summary(sel)["songs"], **selection_quality(sel, truth), **verdict_metrics(verdicts, f.verdicts)}
    with atomic_file(METRICS) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"filter: {note}{vnote}: {metrics['cleaned_songs']} of {metrics['baseline_songs']} training songs kept; "
          f"filtered stem set: {len(filtered.tracks)} tracks -> {f.out}")
    return sel
