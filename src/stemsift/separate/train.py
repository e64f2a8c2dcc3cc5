"""Open-Unmix training loop (open-unmix-pytorch train.py): MSE on magnitude spectrograms, Adam,
ReduceLROnPlateau, early stopping, best-validation epoch kept per target. The four target models train
side by side, each on its own random-mix batches drawn from its own selection pools."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from stemsift import LABELS
from stemsift.separate.data import RandomMixSampler, StemPool
from stemsift.progress import progress
from stemsift.separate.model import ModelConfig, build, spectrogram


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    steps_per_epoch: int = 20
    batch_size: int = 8
    seq_dur: float = 6.0           # seconds per training segment
    lr: float = 1e-3
    weight_decay: float = 1e-5
    lr_decay_patience: int = 3     # epochs without valid improvement before lr *= lr_decay_gamma
    lr_decay_gamma: float = 0.3
    patience: int = 5              # early stopping (epochs); open-unmix uses 140 on full MUSDB
    stats_batches: int = 4         # batches used for the input mean/scale (open-unmix get_statistics)


@dataclass
class TrainResult:
    models: dict[str, torch.nn.Module]
    history: list[dict] = field(default_factory=list)
    best_epoch: dict[str, int] = field(default_factory=dict)
    best_valid: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    steps: int = 0


def input_stats(sampler: RandomMixSampler, spec: torch.nn.Module, batches: int, batch_size: int):
    """Per-bin mean and std of the mixture magnitude (channels averaged), as open-unmix's get_statistics."""
    with torch.no_grad():
        frames = [spec(sampler.batch(batch_size)[0]).mean(1).permute(0, 2, 1).reshape(-1, spec_bins(spec))
                  for _ in range(batches)]
    x = torch.cat(frames).double()
    return x.mean(0).numpy(), np.maximum(x.std(0).numpy(), 1e-4)


def spec_bins(spec: torch.nn.Module) -> int:
    return spec[0].n_fft // 2 + 1


def valid_loss(model, spec, mix: torch.Tensor, ref: torch.Tensor, batch_size: int, device) -> float:
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(mix), batch_size):
            X, Y = spec(mix[i:i + batch_size].to(device)), spec(ref[i:i + batch_size].to(device))
            total += torch.nn.functional.mse_loss(model(X), Y, reduction="sum").item()
            n += Y.numel()
    return total / max(n, 1)


def train_separator(pool: StemPool, selection, valid: dict[str, tuple[torch.Tensor, torch.Tensor]],
                    model_cfg: ModelConfig, cfg: TrainConfig, seed: int, device: torch.device,
                    on_epoch: Callable[[dict], None] | None = None, targets: tuple[str, ...] = LABELS) -> TrainResult:
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    seq_len = int(round(cfg.seq_dur * model_cfg.sample_rate))
    spec = spectrogram(model_cfg).to(device)
    samplers, models, opts, scheds = {}, {}, {}, {}
    for i, t in enumerate(targets):
        samplers[t] = RandomMixSampler(pool, selection, t, seq_len, np.random.default_rng([seed, i]))
        mean, scale = input_stats(samplers[t], spec.cpu(), cfg.stats_batches, cfg.batch_size)
        spec.to(device)
        models[t] = build(model_cfg, mean, scale).to(device)
        opts[t] = torch.optim.Adam(models[t].parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheds[t] = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opts[t], factor=cfg.lr_decay_gamma, patience=cfg.lr_decay_patience, cooldown=1)
    res = TrainResult(models={t: copy.deepcopy(m).cpu() for t, m in models.items()})
    res.best_valid = {t: float("inf") for t in targets}
    stale = {t: 0 for t in targets}
    for epoch in progress(range(1, cfg.epochs + 1), desc=f"train seed {seed}", unit="epochs"):
        row: dict = {"epoch": epoch}
        active = [t for t in targets if stale[t] <= cfg.patience]
        if not active:
            break
        for t in active:
            m, opt = models[t], opts[t]
            m.train()
            losses = []
            for _ in range(cfg.steps_per_epoch):
                x, y = samplers[t].batch(cfg.batch_size)
                loss = torch.nn.functional.mse_loss(m(spec(x.to(device))), spec(y.to(device)))
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
                res.steps += 1
            v = valid_loss(m, spec, *valid[t], cfg.batch_size, device)
            scheds[t].step(v)
            row.update({f"train_loss_{t}": float(np.mean(losses)), f"valid_loss_{t}": v,
                        f"lr_{t}": opts[t].param_groups[0]["lr"]})
            if v < res.best_valid[t]:
                res.best_valid[t], res.best_epoch[t], stale[t] = v, epoch, 0
                res.models[t] = copy.deepcopy(m).cpu()
            else:
                stale[t] += 1
        done = [t for t in targets if f"train_loss_{t}" in row]
        row["train_loss"] = float(np.mean([row[f"train_loss_{t}"] for t in done]))
        row["valid_loss"] = float(np.mean([row[f"valid_loss_{t}"] for t in done]))
        res.history.append(row)
        if on_epoch:
            on_epoch(row)
    res.seconds = time.perf_counter() - t0
    for m in res.models.values():
        m.eval()
    return res


def separate_track(sep, mixture: np.ndarray, device: torch.device) -> dict[str, np.ndarray]:
    """Mixture (frames, channels) -> estimates per target (frames, channels) with the Wiener Separator."""
    x = torch.from_numpy(np.ascontiguousarray(mixture.T, dtype=np.float32))[None].to(device)
    with torch.no_grad():
        est = sep(x)[0].cpu().numpy()  # (targets, channels, frames)
    return {t: est[i].T for i, t in enumerate(sep.target_models)}
