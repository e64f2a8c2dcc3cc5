"""The frame-level embedding classifier shared by `mlp` and `confident` (Blind'25's specialist baseline):
input -> 256 hidden, ReLU, dropout 0.5 -> 4 classes, trained on frames, averaged over a stem's frames."""
from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from stemsift import LABELS
from stemsift.classify.loop import fit, mean_probs

CLASSIFIER_DEFAULTS = {"hidden": 256, "dropout": 0.5, "epochs": 10, "batch_size": 256, "lr": 0.001,
                       "weight_decay": 0.0, "frames_per_stem": 256}


class FrameMLP(nn.Module):
    def __init__(self, dim: int, hidden: int = 256, dropout: float = 0.5, classes: int = len(LABELS)):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


@contextlib.contextmanager
def single_thread():
    """A 67 -> 256 -> 4 MLP gains nothing from threads and loses 10x when another process holds a core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _frames(stems: list[np.ndarray], k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """At most k random frames per stem (so long stems do not dominate) and the stem index of each."""
    xs, idx = [], []
    for i, e in enumerate(stems):
        pick = rng.choice(len(e), size=min(k, len(e)), replace=False) if k and len(e) > k else np.arange(len(e))
        xs.append(e[np.sort(pick)])
        idx.append(np.full(len(pick), i))
    return np.concatenate(xs).astype(np.float32), np.concatenate(idx)


def train_classifier(stems: list[np.ndarray], targets: np.ndarray, options: dict, seed: int,
                     multilabel: bool = False) -> FrameMLP:
    """Train on frames; ``targets`` is one class index per stem (softmax + CE) or a stems x classes 0/1
    matrix (``multilabel``: sigmoid + BCE). Seeded: same inputs, same model."""
    o = {**CLASSIFIER_DEFAULTS, **options}
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    x, idx = _frames(stems, int(o["frames_per_stem"]), rng)
    y = np.asarray(targets)[idx]
    model = FrameMLP(x.shape[1], int(o["hidden"]), float(o["dropout"]))
    model.mean.copy_(torch.from_numpy(x.mean(0)))
    model.std.copy_(torch.from_numpy(x.std(0) + 1e-6))
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y.astype(np.float32) if multilabel else y.astype(np.int64))
    loss_fn = nn.BCEWithLogitsLoss() if multilabel else nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=float(o["lr"]), weight_decay=float(o["weight_decay"]))
    gen = torch.Generator().manual_seed(seed)
    bs = int(o["batch_size"])
    batches = ((xt[b], yt[b]) for _ in range(int(o["epochs"])) for b in torch.randperm(len(xt), generator=gen).split(bs))
    with single_thread():
        fit(model, batches, loss_fn, opt)
    return model


def predict_stems(model: FrameMLP, stems: list[np.ndarray], multilabel: bool = False) -> np.ndarray:
    """Class probabilities per stem (stems x classes): frame probabilities averaged over the stem."""
    return mean_probs(model, stems, torch.sigmoid if multilabel else (lambda z: torch.softmax(z, dim=1)))


def label_index(labels) -> np.ndarray:
    return np.array([LABELS.index(lb) for lb in labels])
