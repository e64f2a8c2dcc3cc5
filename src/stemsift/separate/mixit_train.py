"""MixIT training of a multi-output Open-Unmix: the model separates mixtures of two song mixtures (MoMs) into M
outputs and is scored on how well a binary remix of its outputs rebuilds the two song mixtures (no stems needed).
The loop mirrors separate/train.py: Adam, ReduceLROnPlateau, early stopping, best-validation epoch kept."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from stemsift import LABELS
from stemsift.separate.data import StemPool
from stemsift.separate.mixit import MixITConfig, covariance_loss, mixit_loss, semantic_loss, sparsity_loss
from stemsift.separate.mixit_model import MixITUnmix, magnitude
from stemsift.separate.model import ModelConfig
from stemsift.separate.train import TrainConfig, input_stats

ACTIVE_DB = -40.0  # a stem is present in a MoM when its RMS is above this, relative to the MoM's RMS


@dataclass
class MixITResult:
    model: MixITUnmix
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_valid: float = float("inf")
    seconds: float = 0.0
    steps: int = 0


class MoMSampler:
    """Mixtures of mixtures from a StemPool: each example sums two song-mixture segments (random track, random
    start, gain U[gain]); a song mixture is the sum of its track's 4 stems over the segment."""

    def __init__(self, pool: StemPool, track_ids: list[str], seq_len: int, rng: np.random.Generator,
                 gain: tuple[float, float] = (0.25, 1.25)):
        missing = [(t, lb) for t in track_ids for lb in LABELS if (t, lb) not in pool.audio]
        if missing:
            raise ValueError(f"stem pool lacks {len(missing)} stems of the MixIT tracks, e.g. {missing[0]}")
        if not track_ids:
            raise ValueError("no tracks to draw mixtures of mixtures from")
        self.pool, self.track_ids, self.seq_len, self.rng, self.gain = pool, list(track_ids), seq_len, rng, gain

    def song_segment(self) -> np.ndarray:
        """The 4 stems of one random segment, gain applied: (4, frames, channels) in LABELS order."""
        tid = self.track_ids[int(self.rng.integers(len(self.track_ids)))]
        n = self.pool.frames((tid, LABELS[0]))
        start = int(self.rng.integers(max(n - self.seq_len, 0) + 1))
        stems = np.stack([self.pool.segment((tid, lb), start, self.seq_len) for lb in LABELS])
        return stems * np.float32(self.rng.uniform(*self.gain))

    def example(self) -> tuple[np.ndarray, np.ndarray]:
        """(mixtures (2, frames, channels), weak labels (K,)) of one MoM."""
        stems = np.stack([self.song_segment(), self.song_segment()])   # (2, 4, frames, channels)
        mixtures = stems.sum(1)
        return mixtures, weak_labels(stems, mixtures.sum(0))

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(MoM (B, C, T), the two mixtures (B, 2, C, T), weak labels (B, K))."""
        mixtures, labels = zip(*(self.example() for _ in range(size)))
        mixtures = torch.from_numpy(np.ascontiguousarray(np.stack(mixtures).transpose(0, 1, 3, 2)))
        return mixtures.sum(1), mixtures, torch.from_numpy(np.stack(labels))


def weak_labels(stems: np.ndarray, mom: np.ndarray, active_db: float = ACTIVE_DB) -> np.ndarray:
    """stems (mixtures, K labels, frames, channels), mom (frames, channels) -> (K,) float32 in {0, 1}: a label is
    active when its stem in either mixture is louder than `active_db` relative to the MoM (RMS)."""
    rms = np.sqrt(np.mean(stems.astype(np.float64) ** 2, axis=(2, 3)))            # (mixtures, K)
    ref = np.sqrt(np.mean(mom.astype(np.float64) ** 2)) + 1e-12
    return (20 * np.log10(rms.max(0) / ref + 1e-12) > active_db).astype(np.float32)


def validation_moms(valid_mixtures: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed MoMs from n clean song segments (n, C, T): segment i paired with i + n//2 (mod n), so that
    per-track consecutive segments (fixed_segments) are not paired with their own song. Returns
    (MoM (n, C, T), mixtures (n, 2, C, T))."""
    n = len(valid_mixtures)
    if n < 2:
        raise ValueError(f"need at least 2 validation mixtures to build mixtures of mixtures, got {n}")
    partner = (torch.arange(n) + n // 2) % n
    mixtures = torch.stack([valid_mixtures, valid_mixtures[partner]], dim=1)
    return mixtures.sum(1), mixtures


def loss_terms(est: torch.Tensor, mixtures: torch.Tensor, cfg: MixITConfig, labels: torch.Tensor | None = None,
               classifier: Callable | None = None) -> dict[str, torch.Tensor]:
    """Batch means of the loss components; 'total' = mixit + weighted regularisers (a weight-0 term is kept
    for the log but detached). 'semantic' only with a classifier."""
    terms = {"mixit": mixit_loss(est, mixtures, cfg.assignment, cfg.snr_max)[0].mean()}
    total = terms["mixit"]
    for name, fn, w in (("sparsity", sparsity_loss, cfg.sparsity_weight),
                        ("covariance", covariance_loss, cfg.covariance_weight)):
        terms[name] = fn(est if w else est.detach()).mean()
        total = total + w * terms[name] if w else total
    if classifier is not None:
        b, m = est.shape[:2]
        src = est if cfg.semantic_weight else est.detach()
        probs = classifier(src.reshape(b * m, *est.shape[2:])).reshape(b, m, -1)
        terms["semantic"] = semantic_loss(probs, labels.to(est.device)).mean()
        total = total + cfg.semantic_weight * terms["semantic"] if cfg.semantic_weight else total
    terms["total"] = total
    return terms


def valid_loss(model: MixITUnmix, mom: torch.Tensor, mixtures: torch.Tensor, cfg: MixITConfig, batch_size: int,
               device) -> float:
    """Mean MixIT loss (cfg.assignment) over the fixed validation MoMs."""
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(mom), batch_size):
            est = model(mom[i:i + batch_size].to(device))
            total += mixit_loss(est, mixtures[i:i + batch_size].to(device), cfg.assignment, cfg.snr_max)[0].sum().item()
    return total / len(mom)


def _freeze(classifier):
    if isinstance(classifier, torch.nn.Module):
        classifier.eval()
        classifier.requires_grad_(False)  # gradients flow through it to the separator, never into it
    return classifier


def train_mixit(pool: StemPool, track_ids: list[str], valid_mixtures: torch.Tensor, model_cfg: ModelConfig,
                train_cfg: TrainConfig, mixit_cfg: MixITConfig, seed: int, device: torch.device,
                classifier: Callable | None = None, on_epoch: Callable[[dict], None] | None = None) -> MixITResult:
    """Train a MixITUnmix on MoMs of `track_ids`' song mixtures; `valid_mixtures` (n, C, T) are clean song
    segments (e.g. fixed_segments' mixtures) paired into fixed validation MoMs. `classifier` (waveforms
    (N, C, T) -> probs (N, K=len(LABELS)), frozen) enables the semantic loss. Same seed -> same result (CPU)."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    seq_len = int(round(train_cfg.seq_dur * model_cfg.sample_rate))
    sampler = MoMSampler(pool, track_ids, seq_len, np.random.default_rng([seed, 0]))
    mean, scale = input_stats(sampler, magnitude(model_cfg), train_cfg.stats_batches, train_cfg.batch_size)
    model = MixITUnmix(model_cfg, mixit_cfg.num_outputs, mean, scale, consistency=mixit_cfg.consistency).to(device)
    classifier = _freeze(classifier) if classifier is not None else None
    opt = torch.optim.Adam(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=train_cfg.lr_decay_gamma,
                                                       patience=train_cfg.lr_decay_patience, cooldown=1)
    valid_mom, valid_mix = validation_moms(valid_mixtures)
    res = MixITResult(model=copy.deepcopy(model).cpu())
    stale = 0
    for epoch in range(1, train_cfg.epochs + 1):
        if stale > train_cfg.patience:
            break
        model.train()
        sums: dict[str, float] = {}
        for _ in range(train_cfg.steps_per_epoch):
            mom, mixtures, labels = sampler.batch(train_cfg.batch_size)
            est = model(mom.to(device))
            terms = loss_terms(est, mixtures.to(device), mixit_cfg, labels, classifier)
            opt.zero_grad()
            terms["total"].backward()
            opt.step()
            res.steps += 1
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.item()
        v = valid_loss(model, valid_mom, valid_mix, mixit_cfg, train_cfg.batch_size, device)
        sched.step(v)
        row = {"epoch": epoch, "train_loss": sums.pop("total") / train_cfg.steps_per_epoch, "valid_loss": v,
               **{k: s / train_cfg.steps_per_epoch for k, s in sums.items()}, "lr": opt.param_groups[0]["lr"]}
        if v < res.best_valid:
            res.best_valid, res.best_epoch, stale = v, epoch, 0
            res.model = copy.deepcopy(model).cpu()
        else:
            stale += 1
        res.history.append(row)
        if on_epoch:
            on_epoch(row)
    res.seconds = time.perf_counter() - t0
    res.model.eval()
    return res
