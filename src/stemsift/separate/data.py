"""Training data for separators: stems held in memory once (resampled once), random-mix sampling as
open-unmix's MUSDB training (random track per source, gain U[0.25, 1.25], random channel swap), honouring a
selection. soundfile does the I/O (openunmix.data's torchaudio loaders fail with torchaudio 2.9)."""
from __future__ import annotations

import numpy as np
import torch

from stemsift import LABELS
from stemsift.audio import match_channels, resample
from stemsift.separate.selection import SelectionError, pools
from stemsift.stemset import StemSet


class StemPool:
    """The stems of some tracks as int16 arrays (frames, channels) at the model's sample rate."""

    def __init__(self, ss: StemSet, track_ids: list[str], sample_rate: int, channels: int | None = None):
        self.sample_rate, self.channels = sample_rate, channels or ss.channels
        self.audio: dict[tuple[str, str], np.ndarray] = {}
        for tid in track_ids:
            for label, x in ss.load_track(tid).items():
                x = resample(match_channels(x, self.channels), ss.sample_rate, sample_rate)
                # int16 halves memory; the files are 16-bit so nothing is lost at the native rate
                self.audio[(tid, label)] = np.clip(np.round(x * 32768), -32768, 32767).astype(np.int16)

    def segment(self, key: tuple[str, str], start: int, length: int) -> np.ndarray:
        x = self.audio[key]
        seg = x[start:start + length]
        if len(seg) < length:
            seg = np.pad(seg, ((0, length - len(seg)), (0, 0)))
        return seg.astype(np.float32) / 32768.0

    def frames(self, key: tuple[str, str]) -> int:
        return len(self.audio[key])


class RandomMixSampler:
    """Batches (mixture, target) for one target model: (batch, channels, samples) float tensors."""

    def __init__(self, pool: StemPool, selection, target: str, seq_len: int, rng: np.random.Generator,
                 gain: tuple[float, float] = (0.25, 1.25), channel_swap: bool = True):
        self.pool, self.target, self.seq_len, self.rng = pool, target, seq_len, rng
        self.gain, self.channel_swap = gain, channel_swap
        self.targets, self.interferers = pools(selection, target)
        self.targets = [k for k in self.targets if k in pool.audio]
        self.interferers = {u: [k for k in ks if k in pool.audio] for u, ks in self.interferers.items()}
        if not self.targets:
            raise SelectionError(f"no {target!r} stem is selected as a training target")
        self.drawn: dict[tuple[str, str, str], int] = {}  # (track_id, label, role) -> times drawn, for tests/stats

    def _draw(self, keys: list[tuple[str, str]], role: str) -> np.ndarray:
        key = keys[int(self.rng.integers(len(keys)))]
        self.drawn[(*key, role)] = self.drawn.get((*key, role), 0) + 1
        n = self.pool.frames(key)
        start = int(self.rng.integers(max(n - self.seq_len, 0) + 1))
        x = self.pool.segment(key, start, self.seq_len) * self.rng.uniform(*self.gain)
        if self.channel_swap and x.shape[1] == 2 and self.rng.random() < 0.5:
            x = x[:, ::-1]
        return x

    def example(self) -> tuple[np.ndarray, np.ndarray]:
        y = self._draw(self.targets, "target")
        mix = y.copy()
        for u in LABELS:
            if u != self.target and self.interferers.get(u):
                mix += self._draw(self.interferers[u], "interferer")
        return mix, y

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = zip(*(self.example() for _ in range(size)))
        to = lambda a: torch.from_numpy(np.ascontiguousarray(np.stack(a).transpose(0, 2, 1)))  # noqa: E731
        return to(xs), to(ys)


def fixed_segments(ss: StemSet, track_ids: list[str], sample_rate: int, seq_len: int, per_track: int,
                   channels: int | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Deterministic validation data: evenly spaced segments of clean songs, mixture = sum of the 4 stems.
    Returns target -> (mixtures, targets), each (n, channels, samples)."""
    pool = StemPool(ss, track_ids, sample_rate, channels)
    mixes, refs = [], {t: [] for t in LABELS}
    for tid in track_ids:
        n = pool.frames((tid, LABELS[0]))
        for start in np.linspace(0, max(n - seq_len, 0), per_track).astype(int):
            segs = {t: pool.segment((tid, t), int(start), seq_len) for t in LABELS}
            mixes.append(sum(segs.values()))
            for t in LABELS:
                refs[t].append(segs[t])
    to = lambda a: torch.from_numpy(np.stack(a).transpose(0, 2, 1).copy())  # noqa: E731
    mix = to(mixes)
    return {t: (mix, to(refs[t])) for t in LABELS}
