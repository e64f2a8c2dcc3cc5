"""Training Ψ with BCE on random mixes, and framewise inference aggregated per stem (or per mixture)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from stemsift.classify.loop import fit, mean_probs
from stemsift.progress import progress
from stemsift.classify.mixing import Key, RandomMixer
from stemsift.classify.model import ClassifierConfig, InstrumentClassifier


@dataclass(frozen=True)
class ClassifierTrainConfig:
    steps: int = 1200
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    include_prob: float = 0.5       # chance each class contributes a stem to a random mix
    effects_prob: float = 0.3       # chance a mix passes through one random pedalboard effect


@dataclass
class ClassifierResult:
    model: InstrumentClassifier
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def train_classifier(pool, stem_labels: dict[Key, frozenset], cfg: ClassifierConfig, tc: ClassifierTrainConfig,
                     seed: int, device: torch.device = torch.device("cpu")) -> ClassifierResult:
    """Ψ trained from scratch on random mixes of ``pool`` stems labelled by ``stem_labels`` (BCE, AdamW, cosine lr)."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    mixer = RandomMixer(pool, stem_labels, cfg.seg_len, np.random.default_rng(seed), tc.include_prob,
                        effects_prob=tc.effects_prob)
    model = InstrumentClassifier(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tc.lr, total_steps=tc.steps, pct_start=0.1)
    res = ClassifierResult(model=model)
    batches = (mixer.batch(tc.batch_size) for _ in range(tc.steps))  # drawn lazily: same RNG order as before
    batches = progress(batches, tc.steps, f"refine: classifier (seed {seed})", "steps")
    res.losses = fit(model, batches, torch.nn.functional.binary_cross_entropy_with_logits, opt, sched, device,
                     record=True)
    res.seconds = time.perf_counter() - t0
    return res


def windows(x: np.ndarray, seg_len: int) -> np.ndarray:
    """Half-overlapping windows covering the whole signal (the last one zero-padded): (n, seg_len)."""
    hop = max(seg_len // 2, 1)
    starts = range(0, max(len(x) - seg_len, 0) + 1, hop)
    out = [x[s:s + seg_len] for s in starts]
    if len(x) > seg_len and (len(x) - seg_len) % hop:
        out.append(x[-seg_len:])
    return np.stack([np.pad(w, (0, seg_len - len(w))) for w in out]).astype(np.float32)


def predict_signals(model: InstrumentClassifier, signals: list[np.ndarray], batch_size: int = 64,
                    device: torch.device = torch.device("cpu")) -> np.ndarray:
    """Per-signal class probabilities (n, 4): framewise sigmoid over windows, averaged per signal."""
    return mean_probs(model, [windows(s, model.cfg.seg_len) for s in signals], torch.sigmoid, batch_size, device)


def predict_stems(model: InstrumentClassifier, pool, keys: list[Key], **kw) -> np.ndarray:
    return predict_signals(model, [pool.audio[k][:, 0].astype(np.float32) / 32768.0 for k in keys], **kw)
