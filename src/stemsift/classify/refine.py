"""The self-refining loop (Koo et al., ISMIR 2023, §3.2): Ψ_0 learns from the given (noisy) labels by random
mixing, relabels every training stem; Ψ_k retrains on the labels of Ψ_{k-1}, relabels again. A stem's refined
label set = the classes whose stem-level probability passes the threshold (0.5, 0.9, or per-class adaptive)."""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from stemsift import LABELS
from stemsift.classify.mixing import Key
from stemsift.classify.model import ClassifierConfig, InstrumentClassifier
from stemsift.classify.train import ClassifierTrainConfig, predict_signals, predict_stems, train_classifier

THRESHOLDS = ("0.5", "0.9", "adaptive")
REFINED = "refined_labels.parquet"  # the refine stage's table: every iteration's probabilities and refined sets


def check_threshold(mode) -> str:
    mode = str(mode)
    if mode not in THRESHOLDS:
        raise ValueError(f"refine.threshold: {mode!r} is not one of {', '.join(THRESHOLDS)}")
    return mode


def to_sets(probs: np.ndarray, thresholds: np.ndarray) -> list[frozenset]:
    return [frozenset(c for c, p, t in zip(LABELS, row, thresholds) if p >= t) for row in probs]


def multi_hot(sets: list[frozenset]) -> np.ndarray:
    return np.array([[float(c in s) for c in LABELS] for s in sets])


def f1(pred: np.ndarray, true: np.ndarray) -> float:
    tp = float((pred & true).sum())
    return 2 * tp / max(float(pred.sum() + true.sum()), 1e-12)


def adaptive_thresholds(probs: np.ndarray, targets: np.ndarray, grid: np.ndarray | None = None) -> np.ndarray:
    """Per class, the threshold maximising F1 on clean labelled examples (Koo'23 §4.3: lowers precision loss,
    but the paper finds it hurts separation through lower recall of single-instrument stems)."""
    grid = np.round(np.arange(0.05, 0.951, 0.05), 2) if grid is None else grid
    out = []
    for c in range(len(LABELS)):
        true = targets[:, c] > 0.5
        scores = [f1(probs[:, c] >= t, true) for t in grid]
        out.append(float(grid[int(np.argmax(scores))]))  # first best: the lowest threshold among ties
    return np.array(out)


def subset_examples(pool, track_ids: list[str], labels: dict[Key, frozenset] | None = None
                    ) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """Every non-empty subset of each song's stems summed (4 singles + 11 mixtures per song), its multi-hot label
    (the union of the stems' label sets, the given labels by default) and its kind (single | mixture)."""
    signals, sets, kinds = [], [], []
    for tid in track_ids:
        stems = [(tid, c) for c in LABELS if (tid, c) in pool.audio]
        for n in range(1, len(stems) + 1):
            for combo in itertools.combinations(stems, n):
                signals.append(sum(pool.audio[k][:, 0].astype(np.float32) / 32768.0 for k in combo))
                sets.append(frozenset().union(*((labels or {}).get(k, frozenset({k[1]})) for k in combo)))
                kinds.append("single" if n == 1 else "mixture")
    return signals, multi_hot(sets), kinds


@dataclass
class Iteration:
    index: int
    trained_on: dict[Key, frozenset]   # the labels Ψ_k learned from
    keys: list[Key]
    probs: np.ndarray                  # (stems, 4) Ψ_k's stem-level probabilities
    thresholds: np.ndarray             # (4,)
    refined: dict[Key, frozenset]      # the labels Ψ_k gives: what Ψ_{k+1} learns from
    model: InstrumentClassifier
    seconds: float


def self_refine(pool, given: dict[Key, frozenset], ref_pool, ref_tracks: list[str], cfg: ClassifierConfig,
                tc: ClassifierTrainConfig, iterations: int, threshold: str, seed: int,
                device: torch.device = torch.device("cpu"), on_iteration: Callable[[Iteration], None] | None = None
                ) -> list[Iteration]:
    """Ψ_0 .. Ψ_iterations. Only the given labels of the training stems and the (clean) reference split are seen."""
    threshold = check_threshold(threshold)
    keys = sorted(given)
    labels = dict(given)
    ref_signals = ref_targets = None
    out = []
    for k in range(iterations + 1):
        t0 = time.perf_counter()
        model = train_classifier(pool, labels, cfg, tc, seed=seed + k, device=device).model
        probs = predict_stems(model, pool, keys, device=device)
        if threshold == "adaptive":
            if ref_signals is None:
                ref_signals, ref_targets, _ = subset_examples(ref_pool, ref_tracks)
            th = adaptive_thresholds(predict_signals(model, ref_signals, device=device), ref_targets)
        else:
            th = np.full(len(LABELS), float(threshold))
        refined = dict(zip(keys, to_sets(probs, th)))
        it = Iteration(k, labels, keys, probs, th, refined, model, time.perf_counter() - t0)
        out.append(it)
        if on_iteration:
            on_iteration(it)
        labels = refined
    return out


def final_sets(table: pd.DataFrame) -> dict[tuple[str, str], frozenset]:
    """The refined label set of every stem after the last iteration."""
    last = table[table.iteration == table.iteration.max()]
    return {(t, lb): frozenset(r) for t, lb, r in zip(last.track_id, last.label, last.refined)}


def read_final_sets(folder: str | Path) -> dict[tuple[str, str], frozenset]:
    path = Path(folder) / REFINED
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (run the refine stage: dvc repro refine)")
    return final_sets(pd.read_parquet(path))


def classifier_for(explicit: str | None, refine_out: str | Path) -> Path:
    """Ψ for MixIT's semantic loss and mapping: an explicit classifier folder, else the refine stage's last one."""
    return Path(explicit) if explicit else last_classifier(refine_out)


def last_classifier(folder: str | Path) -> Path:
    """The folder of the last refinement iteration's Ψ (psi<k>)."""
    found = sorted(Path(folder).glob("psi*/classifier.json"), key=lambda p: int(p.parent.name[3:]))
    if not found:
        raise FileNotFoundError(f"{folder}: no classifier psi<k>/ found (run the refine stage: dvc repro refine)")
    return found[-1].parent
