"""`fad`: per-stem Fréchet Audio Distance to the clean reference stems of the same label (score = -FAD).

As fadtk's per-song scoring (microsoft/fadtk, fad.py): FAD = ||mu1 - mu2||^2 + Tr C1 + Tr C2 - 2 Tr sqrt(C1 C2),
with the matrix square root taken by a symmetric eigendecomposition so the result is never complex or
negative (fadtk issue 38); rank-deficient covariances (short or silent stems) are shrunk towards a scaled
identity first.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from stemsift import LABELS
from stemsift.clean.base import Cleaner, StemView, register


def gaussian(frames: np.ndarray, shrinkage: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (shrunk) covariance of frame embeddings (frames x dim), float64."""
    x = np.asarray(frames, dtype=np.float64)
    mu = x.mean(axis=0)
    cov = np.cov(x, rowvar=False) if len(x) > 1 else np.zeros((x.shape[1], x.shape[1]))
    cov = np.atleast_2d(cov)
    if shrinkage > 0:  # Ledoit-Wolf-style target: the mean variance on the diagonal
        cov = (1 - shrinkage) * cov + shrinkage * (np.trace(cov) / len(cov)) * np.eye(len(cov))
    return mu, cov


def _sqrt_psd(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, c1: np.ndarray, mu2: np.ndarray, c2: np.ndarray) -> float:
    """Fréchet distance of two Gaussians; Tr sqrt(C1 C2) = sum sqrt(eig(sqrt(C1) C2 sqrt(C1))), all PSD."""
    s1 = _sqrt_psd(c1)
    eig = np.linalg.eigvalsh(s1 @ c2 @ s1)
    tr_sqrt = float(np.sqrt(np.clip(eig, 0, None)).sum())
    d = float(((mu1 - mu2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * tr_sqrt)
    return max(d, 0.0)


@register
class FadCleaner(Cleaner):
    name = "fad"
    needs = ("embeddings",)
    defaults = {"shrinkage": 0.01}

    def score_stems(self, view: StemView) -> np.ndarray:
        k = float(self.options["shrinkage"])
        ref = {}
        for label in LABELS:  # reference statistics per label: each target's own clean distribution
            rows = view.reference[view.reference.label == label]
            ref[label] = gaussian(np.concatenate(view.embed(rows)), k)
        fad = [frechet_distance(*gaussian(e, k), *ref[label])
               for e, label in zip(view.embed(view.train), view.train.label)]
        return -np.asarray(fad)

    def song_scores(self, stems: pd.DataFrame) -> pd.Series:
        # FADs of different labels live on different scales: divide by each label's median before averaging
        scale = stems.groupby("label").score.transform(lambda s: s.abs().median() or 1.0)
        return (stems.score / scale).groupby(stems.track_id).mean()
