"""Separator training cost: one Open-Unmix train step (all four targets = 4 steps) per preset and segment length,
and the projected epoch time, measured side by side in one run.

    python bench/bench_train.py [--steps 6] [--batch 8] [--paper]
"""
from __future__ import annotations

import argparse
import time

import torch

from stemsift import LABELS
from stemsift.separate.model import build, preset, spectrogram


def step_time(cfg, batch: int, seconds: float, steps: int) -> float:
    torch.manual_seed(0)
    model, spec = build(cfg), spectrogram(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n = int(seconds * cfg.sample_rate)
    x, y = torch.randn(batch, cfg.nb_channels, n) * 0.1, torch.randn(batch, cfg.nb_channels, n) * 0.1
    times = []
    for _ in range(steps + 1):  # the first step warms up allocators
        t0 = time.perf_counter()
        loss = torch.nn.functional.mse_loss(model(spec(x)), spec(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    times = sorted(times[1:])
    return times[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps-per-epoch", type=int, default=20)
    ap.add_argument("--paper", action="store_true", help="also time the paper-size preset (slow on CPU)")
    a = ap.parse_args()
    rows = [("small", s) for s in (3.0, 6.0)] + ([("paper", 6.0)] if a.paper else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {a.batch}\n")
    print(f"{'preset':8s} {'segment':>8s} {'step/target':>12s} {'step x4':>8s} {'epoch':>8s}")
    base = None
    for name, seconds in rows:
        t = step_time(preset(name), a.batch, seconds, a.steps)
        base = base or t
        print(f"{name:8s} {seconds:7.1f}s {t:11.3f}s {4 * t:7.2f}s {4 * t * a.steps_per_epoch:7.1f}s   ({t / base:.1f}x)")
    print(f"\nepoch = {a.steps_per_epoch} steps for each of the {len(LABELS)} target models (params train.steps_per_epoch)")
    print("evaluation time per track, serial vs parallel: python bench/bench_evaluate.py")


if __name__ == "__main__":
    main()
