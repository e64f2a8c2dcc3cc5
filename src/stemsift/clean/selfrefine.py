"""Cleaner `selfrefine`: the refine stage's classifier Ψ (Koo et al., ISMIR 2023) read back as a per-stem score —
how confidently the stem holds exactly its given instrument, p(given) × Π_{c≠given}(1 − p(c)), from the last
refinement iteration. The refine stage saw no truth either."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stemsift import LABELS
from stemsift.clean.base import Cleaner, CleanerError, StemView, register

REFINED = "refined_labels.parquet"


def read_refined(folder: str | Path, iteration: int | None = None) -> pd.DataFrame:
    path = Path(folder) / REFINED
    if not path.is_file():
        raise CleanerError(f"selfrefine.folder: {path} not found (run the refine stage first)")
    table = pd.read_parquet(path)
    last = int(table.iteration.max()) if iteration is None else int(iteration)
    if last not in set(table.iteration):
        raise CleanerError(f"selfrefine.iteration: {path} has no iteration {last} (has {sorted(set(table.iteration))})")
    return table[table.iteration == last]


def exactly_given_score(probs: np.ndarray, given: list[str]) -> np.ndarray:
    """How confidently a stem holds exactly its given instrument: p(given) × Π_{c≠given} (1 − p(c))."""
    idx = np.array([LABELS.index(g) for g in given])
    own = probs[np.arange(len(probs)), idx]
    others = np.prod(np.where(np.eye(len(LABELS), dtype=bool)[idx], 1.0, 1.0 - probs), axis=1)
    return own * others


@register
class SelfRefineCleaner(Cleaner):
    name = "selfrefine"
    needs = ("refined",)
    defaults = {"folder": "data/refined", "iteration": None}

    def score_stems(self, view: StemView) -> np.ndarray:
        table = read_refined(self.options["folder"], self.options["iteration"]).set_index(["track_id", "label"])
        keys = list(zip(view.train.track_id, view.train.label))
        missing = [k for k in keys if k not in table.index]
        if missing:
            raise CleanerError(f"selfrefine: no refined probabilities for stem {missing[0][0]}/{missing[0][1]}")
        probs = table.loc[keys, [f"p_{c}" for c in LABELS]].to_numpy(np.float64)
        return exactly_given_score(probs, list(view.train.label))
