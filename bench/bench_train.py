"""Separator training cost: one Open-Unmix train step (all four targets = 4 steps) per preset and segment length,
next to its compute bound (the step's FLOPs at this machine's float32 matmul roof, measured at the same thread
count), and the projected epoch time, measured side by side in one run. Two thread layouts on the same cores:
one training using every core, and one 1-thread training per core running at once (train.workers x
train.threads = 2 x 1, the default): there each training's step and its bound are measured while the other
trainings run, so shared caches and clocks count.

    python bench/bench_train.py [--steps 10] [--batch 8] [--paper]
"""
from __future__ import annotations

import argparse
import time

import torch

from stemsift import LABELS
from stemsift.separate.model import build, preset, spectrogram


def step_time(cfg, batch: int, seconds: float, steps: int, warmup: int = 3) -> float:
    torch.manual_seed(0)
    model, spec = build(cfg), spectrogram(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n = int(seconds * cfg.sample_rate)
    x, y = torch.randn(batch, cfg.nb_channels, n) * 0.1, torch.randn(batch, cfg.nb_channels, n) * 0.1
    times = []
    for _ in range(steps + warmup):  # the first steps warm up allocators and oneDNN's kernels
        t0 = time.perf_counter()
        loss = torch.nn.functional.mse_loss(model(spec(x)), spec(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    times = sorted(times[warmup:])
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


def _worker(args) -> tuple[float, float]:
    """In a 1-thread process: (median step time, matmul roof), both measured while the other workers run."""
    name, seconds, batch, steps = args
    torch.set_num_threads(1)
    cfg = preset(name, nb_channels=1)
    roof = peak_flops()
    t = step_time(cfg, batch, seconds, steps)
    return t, max(roof, peak_flops())


def parallel(name: str, seconds: float, batch: int, steps: int, workers: int) -> tuple[float, float]:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
        res = list(ex.map(_worker, [(name, seconds, batch, steps)] * workers))
    return sum(t for t, _ in res) / workers, sum(r for _, r in res) / workers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps-per-epoch", type=int, default=20)
    ap.add_argument("--paper", action="store_true", help="also time the paper-size preset (slow on CPU)")
    a = ap.parse_args()
    rows = [("small", s) for s in (3.0, 6.0)] + ([("paper", 6.0)] if a.paper else [])
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, batch {a.batch}\n")
    roof = peak_flops()
    print(f"compute roof (float32 matmul 1024^3): {roof / 1e9:.1f} GFLOP/s with {threads} threads\n")
    print(f"{'preset':8s} {'segment':>8s} {'layout':>16s} {'step/target':>12s} {'GFLOP':>7s} {'bound':>8s} {'x bound':>8s} "
          f"{'steps/s (all)':>14s} {'epoch':>8s}")
    for name, seconds in rows:
        cfg = preset(name, nb_channels=1)
        flops = step_flops(cfg, a.batch, seconds)
        t = step_time(cfg, a.batch, seconds, a.steps)
        layouts = [(f"1 x {threads} threads", t, roof, 1)]
        if threads > 1:
            tp, roof1 = parallel(name, seconds, a.batch, a.steps, threads)
            layouts.append((f"{threads} x 1 thread", tp, roof1, threads))
        for layout, step, r, n in layouts:
            bound = flops / r
            print(f"{name:8s} {seconds:7.1f}s {layout:>16s} {step:11.3f}s {flops / 1e9:7.2f} {bound:7.3f}s {step / bound:7.2f}x "
                  f"{n / step:13.1f} {4 * step * a.steps_per_epoch / n:7.1f}s")
    print("bound = the step's FLOPs at the matmul roof of the threads it runs on; x bound = measured / bound (mono)")
    print("steps/s (all) = training steps per second of all trainings together; epoch = per training set and seed")
    print(f"\nepoch = {a.steps_per_epoch} steps for each of the {len(LABELS)} target models (params train.steps_per_epoch)")
    print("evaluation time per track, serial vs parallel: python bench/bench_evaluate.py")


if __name__ == "__main__":
    main()
