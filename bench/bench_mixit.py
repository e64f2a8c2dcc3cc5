"""Cost of the MixIT loss: exhaustive search over all 2^M assignments against efficient MixIT (least-squares
mixing matrix projected onto the assignments, Wisdom et al. WASPAA 2021), measured side by side in one run, for
the loss alone (forward) and with its backward pass. Inputs: batch 4, 3 s mono at 16 kHz; the outputs are
0 dB-noisy copies of sources (levels U[0.5, 1.5]) that a random assignment mixes into the two mixtures, so the
table also says how often efficient picks exhaustive's assignment and how much loss that costs.

    python bench/bench_mixit.py [--sizes 4 8 12] [--repeats 3] [--noise 1.0]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from stemsift.separate.mixit import assignments, mixit_loss

METHODS = ("exhaustive", "efficient")


def make_problem(batch: int, m: int, samples: int, noise: float, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    src = torch.randn(batch, m, 1, samples, generator=gen) * (0.5 + torch.rand(batch, m, 1, 1, generator=gen))
    truth = assignments(m)[torch.randint(2 ** m, (batch,), generator=gen)]
    mixtures = torch.einsum("bim,bmct->bict", truth, src)
    return src + noise * torch.randn(src.shape, generator=gen), mixtures


def seconds(fn, repeats: int) -> float:
    """Median wall time of `repeats` calls."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def forward(est, mixtures, method):
    return lambda: mixit_loss(est, mixtures, method)


def forward_backward(est, mixtures, method):
    def run():
        est.grad = None
        mixit_loss(est, mixtures, method)[0].mean().backward()
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 12], help="numbers of outputs M")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--sample-rate", type=int, default=16000)
    ap.add_argument("--noise", type=float, default=1.0, help="output noise std (sources have std 0.5-1.5)")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per cell (median)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: a busy 2-core machine makes 2 OpenMP threads spin)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    samples = int(a.seconds * a.sample_rate)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {a.batch} x {a.seconds:g} s mono at "
          f"{a.sample_rate} Hz, median of {a.repeats}, outputs = sources + N(0, {a.noise:g}²)\n")
    warm_est, warm_mix = make_problem(a.batch, 4, samples, a.noise)
    for method in METHODS:  # first-call costs (allocator, kernels) out of the table
        forward_backward(warm_est.requires_grad_(True), warm_mix, method)()
    print(f"{'M':>3s} {'2^M':>6s} {'method':11s} {'fwd ms':>9s} {'fwd+bwd ms':>11s} {'fwd ratio':>10s} "
          f"{'f+b ratio':>10s} {'same A':>7s} {'loss gap dB':>12s}")
    for m in a.sizes:
        est, mixtures = make_problem(a.batch, m, samples, a.noise, seed=m)
        est.requires_grad_(True)
        t = {meth: (seconds(forward(est, mixtures, meth), a.repeats),
                    seconds(forward_backward(est, mixtures, meth), a.repeats)) for meth in METHODS}
        with torch.no_grad():
            (loss_x, a_x), (loss_e, a_e) = (mixit_loss(est, mixtures, meth) for meth in METHODS)
        same = torch.all(a_x == a_e, dim=(1, 2)).float().mean().item()
        gap = (loss_e - loss_x).mean().item()
        for meth in METHODS:
            f, fb = t[meth]
            ratio_f, ratio_fb = f / t["efficient"][0], fb / t["efficient"][1]
            extra = f"{same:7.0%} {gap:12.3f}" if meth == "efficient" else ""
            print(f"{m:3d} {2 ** m:6d} {meth:11s} {1e3 * f:9.1f} {1e3 * fb:11.1f} {ratio_f:9.1f}x {ratio_fb:9.1f}x "
                  f"{extra}", flush=True)
    print("\nratio: time / efficient's time at the same M; same A: share of examples where efficient picks "
          "exhaustive's assignment; loss gap: mean (efficient - exhaustive) MixIT loss (>= 0, exhaustive is the min)")


if __name__ == "__main__":
    main()
