"""Random-mix training examples for Ψ (Koo et al. 2023, §3.1): for each class independently, include a stem that
carries that label (random track, segment and gain), at least one stem; the target is the union of the chosen
stems' label sets. A stem labelled "vocals" that holds drums+vocals, mixed with a true drums stem, still yields a
correct mixture label {vocals, drums} most of the time — the mechanism that lets Ψ learn through label noise."""
from __future__ import annotations

import numpy as np
import pedalboard
import torch

from stemsift import LABELS

Key = tuple[str, str]


def label_pools(stem_labels: dict[Key, frozenset]) -> dict[str, list[Key]]:
    """Per class, the stems whose label set carries it (a stem with refined set {bass, drums} is in both)."""
    return {c: sorted(k for k, ls in stem_labels.items() if c in ls) for c in LABELS}


def augment_board(rng: np.random.Generator, sample_rate: int) -> pedalboard.Pedalboard:
    """One random mild effect from pedalboard (EQ shelves, compression, small room) — not the defect effects."""
    kind = int(rng.integers(4))
    if kind == 0:
        fx = pedalboard.LowShelfFilter(cutoff_frequency_hz=250.0, gain_db=float(rng.uniform(-6, 6)))
    elif kind == 1:
        fx = pedalboard.HighShelfFilter(cutoff_frequency_hz=4000.0, gain_db=float(rng.uniform(-6, 6)))
    elif kind == 2:
        fx = pedalboard.Compressor(threshold_db=float(rng.uniform(-30, -10)), ratio=4.0)
    else:
        fx = pedalboard.Reverb(room_size=float(rng.uniform(0.1, 0.4)), wet_level=0.15, dry_level=0.85)
    return pedalboard.Pedalboard([fx])


class RandomMixer:
    """Batches (waveforms (batch, samples), multi-hot targets (batch, 4)) from a mono StemPool and label sets."""

    def __init__(self, pool, stem_labels: dict[Key, frozenset], seg_len: int, rng: np.random.Generator,
                 include_prob: float = 0.5, gain: tuple[float, float] = (0.25, 1.25), effects_prob: float = 0.3):
        self.pool, self.seg_len, self.rng = pool, seg_len, rng
        self.include_prob, self.gain, self.effects_prob = include_prob, gain, effects_prob
        self.labels = {k: frozenset(v) for k, v in stem_labels.items() if k in pool.audio}
        self.by_class = label_pools(self.labels)
        self.classes = [c for c in LABELS if self.by_class[c]]
        if not self.classes:
            raise ValueError("no stem carries any label: nothing to train the classifier on")
        self.chosen: list[list[Key]] = []  # the stems of the last batch, for tests

    def choose(self) -> list[Key]:
        picks = [c for c in self.classes if self.rng.random() < self.include_prob]
        if not picks:  # at least one stem per example
            picks = [self.classes[int(self.rng.integers(len(self.classes)))]]
        return [self.by_class[c][int(self.rng.integers(len(self.by_class[c])))] for c in picks]

    def example(self) -> tuple[np.ndarray, np.ndarray, list[Key]]:
        keys = self.choose()
        mix = np.zeros(self.seg_len, np.float32)
        for k in keys:
            start = int(self.rng.integers(max(self.pool.frames(k) - self.seg_len, 0) + 1))
            mix += self.pool.segment(k, start, self.seg_len)[:, 0] * self.rng.uniform(*self.gain)
        if self.rng.random() < self.effects_prob:
            mix = augment_board(self.rng, self.pool.sample_rate)(mix[None], self.pool.sample_rate)[0]
        target = union_target([self.labels[k] for k in keys])
        return mix.astype(np.float32), target, keys

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys, self.chosen = zip(*(self.example() for _ in range(size)))
        self.chosen = list(self.chosen)
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def union_target(label_sets: list[frozenset]) -> np.ndarray:
    """Multi-hot union of the chosen stems' label sets."""
    return np.array([float(any(c in ls for ls in label_sets)) for c in LABELS], np.float32)
