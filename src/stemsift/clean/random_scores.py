"""`random`: seeded uniform scores, the control every cleaner must beat (its detection AUC is ~0.5)."""
from __future__ import annotations

import numpy as np

from stemsift.clean.base import Cleaner, StemView, register


@register
class RandomCleaner(Cleaner):
    name = "random"

    def score_stems(self, view: StemView) -> np.ndarray:
        return np.random.default_rng(self.seed).random(len(view.train))
