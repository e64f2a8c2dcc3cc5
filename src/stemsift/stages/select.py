"""Stage `select`: the selections of the fixed training sets — baseline (the contaminated train split as is),
oracle (truly clean songs; simulated truth) and reference (the clean reference split alone). The `cleaned`
set comes from the filter stage, after the cleaners (one of which needs the trained baseline)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from stemsift.catalogue import TRUTH
from stemsift.params import ContaminateParams, SelectParams, stage_params
from stemsift.separate.selection import catalogue_rows, given_selection, summary
from stemsift.stemset import StemSet, atomic_dir

FIXED_SETS = ("baseline", "oracle", "reference")


def clean_songs(truth: pd.DataFrame) -> list[str]:
    """Songs whose every stem is clean according to the simulated truth (the oracle's training set)."""
    ok = truth.groupby("track_id").defect.agg(lambda d: bool((d == "clean").all()))
    return sorted(ok[ok].index)


def fixed_selections(ss: StemSet, truth: pd.DataFrame | None) -> dict[str, pd.DataFrame]:
    train = ss.track_ids("train")
    return {"baseline": given_selection(ss.stems, train),
            "oracle": given_selection(ss.stems, clean_songs(truth) if truth is not None else train),
            "reference": given_selection(ss.stems, ss.track_ids("reference"))}


def run(params: dict) -> dict[str, pd.DataFrame]:
    c = stage_params(params, "contaminate", ContaminateParams)
    s = stage_params(params, "select", SelectParams)
    ss = StemSet(c.out)
    truth = pd.read_parquet(Path(c.out) / TRUTH) if (Path(c.out) / TRUTH).is_file() else None
    sets = fixed_selections(ss, truth)
    with atomic_dir(s.out) as tmp:
        for name, sel in sets.items():
            sel.to_parquet(tmp / f"{name}.parquet", index=False)
        table = pd.concat([catalogue_rows(sel, name, name, "", 1.0, "unified") for name, sel in sets.items()])
        table.to_parquet(tmp / "selections.parquet", index=False)
    print("select: songs " + ", ".join(f"{k} {summary(v)['songs']}" for k, v in sets.items()))
    return sets
