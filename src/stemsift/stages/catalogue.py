"""Stage `catalogue`: assemble data/catalogue.duckdb from the stages' parquet tables."""
from __future__ import annotations

from pathlib import Path

from stemsift.catalogue import build_catalogue, query
from stemsift.params import CatalogueParams, ContaminateParams, DataParams, stage_params

# Later stages drop their parquet here (one file per config); the catalogue picks them up.
EXTRA_TABLES = {"scores": ["data/scores"], "attribution": ["data/scores"], "selections": ["data/selections", "data/filtered", "data/refined"],
                "refined_labels": ["data/refined"], "labels": ["data/refined"], "runs": ["data/runs"],
                "verdicts": ["data/filtered"], "audit": ["data/audit"]}


def run(params: dict) -> Path:
    d = stage_params(params, "data", DataParams)
    c = stage_params(params, "contaminate", ContaminateParams)
    p = stage_params(params, "catalogue", CatalogueParams)
    stemsets = {"raw": d.out}
    if (Path(c.out) / "manifest.parquet").is_file() and Path(c.out).resolve() != Path(d.out).resolve():  # curate: one set
        stemsets["contaminated"] = c.out
    extra = {t: sorted(p for folder in folders for p in Path(folder).glob(f"**/{t}*.parquet"))
             for t, folders in EXTRA_TABLES.items()}
    out = build_catalogue(p.out, stemsets, {t: ps for t, ps in extra.items() if ps})
    counts = query(out, "SELECT stemset, count(*) AS n FROM stems GROUP BY stemset ORDER BY stemset")
    print(f"catalogue: {dict(zip(counts.stemset, counts.n))} stems -> {out}")
    return out
