"""`mlp`: Blind'25's specialist baseline — a frame classifier trained on the clean reference stems;
score = probability of the stem's given label, averaged over its frames."""
from __future__ import annotations

import numpy as np

from stemsift import LABELS
from stemsift.clean.base import Cleaner, StemView, register
from stemsift.clean.frames import CLASSIFIER_DEFAULTS, label_index, predict_stems, train_classifier


@register
class MlpCleaner(Cleaner):
    name = "mlp"
    needs = ("embeddings",)
    defaults = dict(CLASSIFIER_DEFAULTS)

    def score_stems(self, view: StemView) -> np.ndarray:
        model = train_classifier(view.embed(view.reference), label_index(view.reference.label), self.options, self.seed)
        probs = predict_stems(model, view.embed(view.train))
        self.columns = {f"p_{lb}": probs[:, k] for k, lb in enumerate(LABELS)}  # for filter.auto.method=cleanlab
        return probs[np.arange(len(probs)), label_index(view.train.label)]
