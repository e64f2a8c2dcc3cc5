"""Stage `audit`: duplicates and near duplicates within and across splits (train/test leakage), stems shared by
different songs, mixtures that are not the sum of their stems, silent and clipped stems -> data/audit/audit.parquet
(catalogue table `audit`), metrics/audit.json. Read-only on the stem set: it reports, the filter decides."""
from __future__ import annotations

import json
import time
from pathlib import Path

from stemsift.data.audit import AuditConfig, audit
from stemsift.params import AuditParams, DataParams, stage_params
from stemsift.stemset import StemSet, atomic_dir, atomic_file

METRICS = Path("metrics/audit.json")
TABLE = "audit.parquet"


def run(params: dict):
    d = stage_params(params, "data", DataParams)
    a = stage_params(params, "audit", AuditParams)
    ss = StemSet(a.stemset or d.out)
    t0 = time.perf_counter()
    table, metrics = audit(ss, AuditConfig(float(a.near_threshold), float(a.max_shift_s), int(a.candidates),
                                           float(a.mixture_tol_db), int(a.clip_samples)))
    metrics = {"stemset": str(ss.root), **metrics, "seconds": round(time.perf_counter() - t0, 2)}
    with atomic_dir(a.out) as tmp:
        table.assign(stemset=str(ss.root)).to_parquet(tmp / TABLE, index=False)
    with atomic_file(METRICS) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"audit: {metrics['songs']} songs: {metrics['duplicate_song']} duplicate and {metrics['near_duplicate_song']} "
          f"near-duplicate song pairs ({metrics['leaks']} across splits), {metrics['duplicate_stem']} shared stems, "
          f"{metrics['bad_mixture']} bad mixtures, {metrics['silent_stem']} silent, {metrics['clipped_stem']} clipped "
          f"stems -> {a.out}")
    for r in table[table.leak].itertuples():
        print(f"audit: leak: {r.kind} {r.split}/{r.track_id} ~ {r.other_split}/{r.other_track_id} ({r.value:.3f})")
    return table
