"""Stage `contaminate`: simulated defects on the train split, ground truth kept in truth.parquet."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from stemsift.catalogue import TRUTH
from stemsift.data.defects import contaminate_song, plan_defects
from stemsift.params import ContaminateParams, DataParams, stage_params
from stemsift.stemset import StemSet, StemSetWriter, atomic_dir, atomic_file, fit_headroom

METRICS = Path("metrics/contamination.json")


def contaminate_stemset(src: StemSet, out_root: Path, p: ContaminateParams) -> pd.DataFrame:
    """Write the contaminated copy of ``src`` into ``out_root``; return the truth table."""
    ext = Path(src.stems.path.iloc[0]).suffix
    writer = StemSetWriter(out_root, src.sample_rate, src.channels, ext, source=str(src.tracks.source.iloc[0]))
    for tid in src.tracks.track_id[src.tracks.split != "train"]:
        writer.copy_track(src, tid)
    truth = []
    for i, plan in enumerate(plan_defects(src.track_ids("train"), p.preset, p.seed)):
        stems = src.load_track(plan.track_id)
        rng = np.random.default_rng([p.seed, i])
        dirty, rows = contaminate_song(stems, plan, src.sample_rate, rng, p.defect_config())
        if plan.defect == "clean":
            writer.copy_track(src, plan.track_id)  # byte-identical to the raw set
        else:
            dirty, gain = fit_headroom(dirty, 0.99)  # 16-bit files: the contaminated sum must not clip
            meta = {**src.meta(plan.track_id), "defect": plan.defect, "defect_kind": plan.kind, "defect_gain": gain}
            writer.add_track(plan.track_id, "train", dirty, meta)
        truth += [{**r, "track_id": plan.track_id, "params": json.dumps(r["params"], sort_keys=True)} for r in rows]
    writer.close()
    df = pd.DataFrame(truth)[["track_id", "label", "defect", "kind", "params", "true_instruments"]]
    df["true_instruments"] = [sorted(v) for v in df.true_instruments]
    df.to_parquet(out_root / TRUTH, index=False)
    return df


def summarize(truth: pd.DataFrame) -> dict:
    """Counts for metrics/contamination.json (short stable keys: they become dvc exp show columns)."""
    song = truth.groupby("track_id").defect.agg(lambda d: next((x for x in d if x != "clean"), "clean"))
    out = {"songs": int(len(song)), "stems": int(len(truth))}
    for defect, n in song.value_counts().sort_index().items():
        out[f"songs_{defect}"] = int(n)
    dirty = truth[truth.defect != "clean"]
    out["stems_defective"] = int(len(dirty))
    for kind, n in dirty.kind.value_counts().sort_index().items():
        out[f"stems_{kind}"] = int(n)
    return out


def run(params: dict) -> StemSet:
    d = stage_params(params, "data", DataParams)
    p = stage_params(params, "contaminate", ContaminateParams)
    src = StemSet(d.out)
    with atomic_dir(p.out) as tmp:
        truth = contaminate_stemset(src, tmp, p)
    with atomic_file(METRICS) as tmp:
        tmp.write_text(json.dumps(summarize(truth), indent=2) + "\n")
    ss = StemSet(p.out)
    print(f"contaminate: preset {p.preset}: {summarize(truth)} -> {p.out}")
    return ss
