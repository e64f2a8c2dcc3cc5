"""Stage `filter`: the selections of every training set — baseline (contaminated train as is), cleaned (a
cleaner's scores at a keep ratio), oracle (truly clean songs; simulated truth) and reference (the clean
reference split alone). Files are never deleted: a selection only says what the sampler may draw."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from stemsift.catalogue import TRUTH
from stemsift.params import ContaminateParams, FilterParams, params_hash, stage_params
from stemsift.separate.selection import given_selection, summary
from stemsift.stemset import StemSet, atomic_dir, atomic_file

METRICS = Path("metrics/filter.json")


def clean_songs(truth: pd.DataFrame) -> list[str]:
    """Songs whose every stem is clean according to the simulated truth (the oracle's training set)."""
    ok = truth.groupby("track_id").defect.agg(lambda d: bool((d == "clean").all()))
    return sorted(ok[ok].index)


def cleaned_selection(baseline: pd.DataFrame, f: FilterParams) -> tuple[pd.DataFrame, str]:
    if f.cleaner == "none":
        return baseline.copy(), "no cleaner configured (filter.cleaner=none): the cleaned set keeps every stem"
    raise ValueError(f"filter.cleaner={f.cleaner!r}: no such cleaner yet (available: none)")


def build_selections(ss: StemSet, truth: pd.DataFrame | None, f: FilterParams) -> tuple[dict[str, pd.DataFrame], str]:
    train = ss.track_ids("train")
    sets = {"baseline": given_selection(ss.stems, train)}
    sets["cleaned"], note = cleaned_selection(sets["baseline"], f)
    sets["oracle"] = given_selection(ss.stems, clean_songs(truth) if truth is not None else train)
    sets["reference"] = given_selection(ss.stems, ss.track_ids("reference"))
    return sets, note


def run(params: dict) -> dict[str, pd.DataFrame]:
    c = stage_params(params, "contaminate", ContaminateParams)
    f = stage_params(params, "filter", FilterParams)
    ss = StemSet(c.out)
    truth = pd.read_parquet(Path(c.out) / TRUTH) if (Path(c.out) / TRUTH).is_file() else None
    sets, note = build_selections(ss, truth, f)
    config = params_hash(params.get("filter", {}))
    with atomic_dir(f.out) as tmp:
        for name, sel in sets.items():
            sel.to_parquet(tmp / f"{name}.parquet", index=False)
        table = pd.concat([sel.assign(train_set=name, cleaner=f.cleaner if name == "cleaned" else name,
                                      config_hash=config, keep_ratio=f.keep_ratio if name == "cleaned" else 1.0,
                                      mode=f.mode) for name, sel in sets.items()])
        table.to_parquet(tmp / "selections.parquet", index=False)
    metrics = {"cleaner": f.cleaner, "keep_ratio": f.keep_ratio, "mode": f.mode,
               **{f"{name}_songs": summary(sel)["songs"] for name, sel in sets.items()}}
    with atomic_file(METRICS) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"filter: {note}; songs kept: " + ", ".join(f"{k} {summary(v)['songs']}" for k, v in sets.items()))
    return sets
