"""A tiny scored-and-filtered project in a tmp folder (stem set, truth, baseline selection, random scores,
filter output, params) for the verdicts, export and listening-report tests. Real stages, generated audio."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from stemsift import LABELS
from stemsift.clean import StemView, get_cleaner
from stemsift.separate.selection import given_selection
from stemsift.stemset import StemSetWriter

from conftest import make_stems

SR = 8000
DEFECTIVE = "train-01"  # vocals and bass swapped (truth says label_noise)


def build_world(root: Path, n_train: int = 8, n_ref: int = 2, n_test: int = 2, seconds: float = 2.0,
                cleaner: str = "random", ratio: float = 0.5, leak: bool = False) -> dict:
    """Write the stage outputs under ``root`` and return params (paths relative to ``root``: chdir there)."""
    w = StemSetWriter(root / "data/contaminated", SR, 1)
    truth = []
    for split, n, base in (("train", n_train, 0), ("reference", n_ref, 100), ("test", n_test, 200)):
        for i in range(n):
            tid = f"{split}-{i:02d}"
            s = {k: v[:, :1] for k, v in make_stems(base + i, seconds, SR, 1).items()}
            if tid == DEFECTIVE:
                s["vocals"], s["bass"] = s["bass"], s["vocals"]
            w.add_track(tid, split, s)
            if leak and tid == "train-00":  # the same song again in test/: the audit must call it a leak
                w.add_track("test-copy", "test", s)
            if split == "train":
                truth += [(tid, lb, "label_noise" if tid == DEFECTIVE and lb in ("vocals", "bass") else "clean",
                           "swap" if tid == DEFECTIVE and lb in ("vocals", "bass") else "",
                           [{"vocals": "bass", "bass": "vocals"}.get(lb, lb) if tid == DEFECTIVE else lb])
                          for lb in LABELS]
    ss = w.close()
    pd.DataFrame(truth, columns=["track_id", "label", "defect", "kind", "true_instruments"]).to_parquet(
        root / "data/contaminated/truth.parquet")
    (root / "data/selections").mkdir(parents=True)
    given_selection(ss.stems, ss.track_ids("train")).to_parquet(root / "data/selections/baseline.parquet", index=False)
    (root / "data/scores").mkdir(parents=True)
    scores = get_cleaner(cleaner, seed=0).score(StemView.of(ss))
    scores.assign(cleaner=cleaner, config_hash="test").to_parquet(root / f"data/scores/scores-{cleaner}.parquet", index=False)
    return {"_path": str(root / "params.yaml"), "data": {"source": "synthetic"},
            "contaminate": {"out": "data/contaminated"}, "select": {"out": "data/selections"},
            "score": {"cleaner": cleaner, "cleaners": [cleaner], "out": "data/scores"},
            "filter": {"ratio": ratio, "mode": "unified", "out": "data/filtered"}}
