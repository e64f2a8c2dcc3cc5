"""`confident`: confident learning (Northcutt et al., JAIR 2021; cleanlab) — multi-label label-quality scores
from out-of-sample predicted probabilities of the same frame classifier, K-fold over the training songs."""
from __future__ import annotations

import numpy as np

from stemsift import LABELS
from stemsift.clean.base import Cleaner, StemView, register
from stemsift.clean.frames import CLASSIFIER_DEFAULTS, label_index, predict_stems, train_classifier


def out_of_fold_probs(stems: list[np.ndarray], songs: np.ndarray, onehot: np.ndarray, folds: int,
                      options: dict, seed: int) -> np.ndarray:
    """Predicted probabilities of every stem from a model that never saw its song (folds split by song)."""
    order = np.random.default_rng(seed).permutation(np.unique(songs))
    fold_of = {s: i % folds for i, s in enumerate(order)}
    fold = np.array([fold_of[s] for s in songs])
    probs = np.zeros(onehot.shape)
    for k in range(folds):
        train, held = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        model = train_classifier([stems[i] for i in train], onehot[train], options, seed + k, multilabel=True)
        probs[held] = predict_stems(model, [stems[i] for i in held], multilabel=True)
    return probs


@register
class ConfidentCleaner(Cleaner):
    name = "confident"
    needs = ("embeddings",)
    defaults = {**CLASSIFIER_DEFAULTS, "folds": 5, "method": "self_confidence"}

    def score_stems(self, view: StemView) -> np.ndarray:
        from cleanlab.multilabel_classification import get_label_quality_scores

        o = dict(self.options)
        folds, method = int(o.pop("folds")), o.pop("method")
        songs = view.train.track_id.to_numpy()
        given = label_index(view.train.label)
        onehot = np.eye(len(LABELS))[given]
        probs = out_of_fold_probs(view.embed(view.train), songs, onehot, min(folds, len(set(songs))), o, self.seed)
        self.columns = {f"p_{lb}": probs[:, k] for k, lb in enumerate(LABELS)}  # for filter.auto.method=cleanlab
        labels = [[int(g)] for g in given]  # each stem's given label set
        return np.asarray(get_label_quality_scores(labels, probs, method=method), dtype=np.float64)
