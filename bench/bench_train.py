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


def step_flops(cfg, batch: int, seconds: float) -> float:
    """FLOPs of one forward + backward: matmuls counted by torch's FlopCounterMode, plus the BLSTM, which the
    counter does not see (4 gates x (input + hidden) x hidden x 2 per frame and direction; backward = 2x forward)."""
    from torch.utils.flop_counter import FlopCounterMode

    model, spec = build(cfg), spectrogram(cfg)
    n = int(seconds * cfg.sample_rate)
    x = torch.randn(batch, cfg.nb_channels, n) * 0.1
    with FlopCounterMode(display=False) as fc:
        torch.nn.functional.mse_loss(model(spec(x)), spec(x * 0.5)).backward()
    frames = spec(x[:1]).shape[-1]
    h = cfg.hidden_size // 2 if not cfg.unidirectional else cfg.hidden_size
    dirs = 1 if cfg.unidirectional else 2
    lstm = cfg.nb_layers * dirs * 4 * h * (cfg.hidden_size + h) * 2 * frames * batch
    return float(fc.get_total_flops()) + 3.0 * lstm


def peak_flops(n: int = 1024, reps: int = 20) -> float:
    """Sustained float32 matmul rate of this machine at the current thread count (the compute bound's roof)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps-per-epoch", type=int, default=20)
    ap.add_argument("--paper", action="store_true", help="also time the paper-size preset (slow on CPU)")
    a = ap.parse_args()
    rows = [("small", s) for s in (3.0, 6.0)] + ([("paper", 6.0)] if a.paper else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {a.batch}\n")
    roof = peak_flops()
    print(f"compute roof (float32 matmul 1024^3): {roof / 1e9:.1f} GFLOP/s\n")
    print(f"{'preset':8s} {'segment':>8s} {'step/target':>12s} {'GFLOP':>7s} {'bound':>8s} {'x bound':>8s} {'step x4':>8s} {'epoch':>8s}")
    base = None
    for name, seconds in rows:
        cfg = preset(name, nb_channels=1)
        t = step_time(cfg, a.batch, seconds, a.steps)
        flops = step_flops(cfg, a.batch, seconds)
        base = base or t
        print(f"{name:8s} {seconds:7.1f}s {t:11.3f}s {flops / 1e9:7.2f} {flops / roof:7.3f}s {t / (flops / roof):7.1f}x "
              f"{4 * t:7.2f}s {4 * t * a.steps_per_epoch:7.1f}s   ({t / base:.1f}x)")
    print("bound = the step's FLOPs at the matmul roof; x bound = measured / bound (mono, as the default set)")
    print(f"\nepoch = {a.steps_per_epoch} steps for each of the {len(LABELS)} target models (params train.steps_per_epoch)")
    print("evaluation time per track, serial vs parallel: python bench/bench_evaluate.py")


if __name__ == "__main__":
    main()
