"""Stage `contaminate`: simulated defects on the train split, ground truth kept in truth.parquet."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from stemsift.catalogue import TRUTH
from stemsift.data.defects import contaminate_song, level_song, plan_defects, resolve_config
from stemsift.params import ContaminateParams, DataParams, stage_params
from stemsift.stemset import StemSet, StemSetWriter, atomic_dir, atomic_file

METRICS = Path("metrics/contamination.json")


def contaminate_stemset(src: StemSet, out_root: Path, p: ContaminateParams) -> pd.DataFrame:
    """Write the contaminated copy of ``src`` into ``out_root``; return the truth table.

    Every training song, clean or defective, is re-written through the same level treatment (``level_song``: a
    drawn song gain, then one headroom rule) and encoding, so neither its bytes nor its loudness tell a clean song
    from a defective one. The reference songs get the same treatment (their own draws), so the clean reference
    split and the clean training songs are one population, as in a real collection: a cleaner that compares a
    stem with the reference sees no level shift between the splits. Test songs are copied as they are."""
    ext = Path(src.stems.path.iloc[0]).suffix
    writer = StemSetWriter(out_root, src.sample_rate, src.channels, ext, source=str(src.tracks.source.iloc[0]))
    cfg = resolve_config(p.defect_config())
    reference = {tid: j for j, tid in enumerate(src.track_ids("reference"))}
    for tid in src.tracks.track_id[src.tracks.split != "train"]:  # in the source's order
        if tid not in reference:
            writer.copy_track(src, tid)
            continue
        leveled, gains = level_song(src.load_track(tid), np.random.default_rng([p.seed, reference[tid], 3]), cfg)
        writer.add_track(tid, "reference", leveled, {**src.meta(tid), **gains})
    train = src.track_ids("train")
    truth = []
    for i, plan in enumerate(plan_defects(train, p.preset, p.seed, cfg["label_noise"]["kinds"])):
        stems = src.load_track(plan.track_id)
        rng = np.random.default_rng([p.seed, i])
        donor_id = None
        if plan.kind == "foreign":  # another training song lends a stem (its raw, clean version)
            others = [t for t in train if t != plan.track_id]
            if not others:
                raise ValueError(f"contaminate.label_noise.kinds: 'foreign' needs two training songs, {src.root} has one")
            donor_id = others[int(np.random.default_rng([p.seed, i, 1]).integers(len(others)))]
        dirty, rows = contaminate_song(stems, plan, src.sample_rate, rng, cfg,
                                       donor=src.load_track(donor_id) if donor_id else None, donor_id=donor_id or "")
        leveled, gains = level_song(dirty, np.random.default_rng([p.seed, i, 2]), cfg)
        meta = {**src.meta(plan.track_id), "defect": plan.defect, "defect_kind": plan.kind, **gains}
        writer.add_track(plan.track_id, "train", leveled, meta)
        truth += [{**r, "track_id": plan.track_id, "params": json.dumps({**r["params"], **gains}, sort_keys=True)}
                  for r in rows]
    writer.close()
    df = pd.DataFrame(truth)[["track_id", "label", "defect", "kind", "params", "true_instruments"]]
    df["true_instruments"] = [sorted(v) for v in df.true_instruments]
    df.to_parquet(out_root / TRUTH, index=False)
    return df


def summarize(truth: pd.DataFrame) -> dict:
    """Counts for metrics/contamination.json (short stable keys: they become dvc exp show columns): songs per
    defect and per kind (songs_swap, songs_reverb, ...), stems per kind, and how many songs the headroom rule
    scaled down (songs_headroom; the same rule for clean and defective songs)."""
    first = truth.groupby("track_id").agg(
        defect=("defect", lambda d: next((x for x in d if x != "clean"), "clean")),
        kind=("kind", lambda k: next((x for x in k if x), "")), params=("params", "first"))
    out = {"songs": int(len(first)), "stems": int(len(truth))}
    for defect, n in first.defect.value_counts().sort_index().items():
        out[f"songs_{defect}"] = int(n)
    for kind, n in first.kind[~first.kind.isin(["", *first.defect])].value_counts().sort_index().items():
        out[f"songs_{kind}"] = int(n)
    dirty = truth[truth.defect != "clean"]
    out["stems_defective"] = int(len(dirty))
    for kind, n in dirty.kind.value_counts().sort_index().items():
        out[f"stems_{kind}"] = int(n)
    head = [json.loads(p).get("headroom_db", 0.0) for p in first.params]
    out["songs_headroom"] = int(sum(h < 0 for h in head))
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
