"""Embedding throughput of the `embed` stage's code path (stemsift.embed.cache.embed_stemset): the local executor
vs Ray tasks on N worker processes (a private Ray instance on this machine, one CPU and one torch thread each).

    python bench/bench_ray.py [--stems 24] [--seconds 20] [--workers 2] [--embedders mel,crepe]

The local executor runs with torch's thread count (OMP_NUM_THREADS if set). Input: a generated stem set on disk (16 kHz mono band-limited noise, FLAC), read by the stage as usual; a fresh
embedding cache per run, so every stem is embedded. Each Ray run first warms its workers (torch import,
embedder build) with one stem per worker; the table shows the steady state and, apart, that warm-up. The
outputs of the two executors are compared byte for byte.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from stemsift import LABELS
from stemsift.compute import THREAD_ENV, Executor, shutdown
from stemsift.embed import get_embedder
from stemsift.embed.cache import embed_stemset
from stemsift.stemset import StemSet, StemSetWriter

SR = 16000


def make_set(root: Path, stems: int, seconds: float) -> StemSet:
    rng = np.random.default_rng(0)
    w = StemSetWriter(root, SR, 1)
    for i in range((stems + 3) // 4):
        w.add_track(f"song{i:03d}", "train", {
            lab: (0.05 * rng.standard_normal(int(seconds * SR))).astype(np.float32) for lab in LABELS})
    return w.close()


def run(ss: StemSet, name: str, opts: dict, executor: Executor, tmp: Path, tag: str) -> tuple[float, Path]:
    os.environ["STEMSIFT_CACHE"] = str(tmp / f"cache-{tag}")  # nothing cached: every stem is embedded
    emb = get_embedder(name, opts, device="cpu")
    out = tmp / f"out-{tag}"
    t0 = time.perf_counter()
    embed_stemset(ss, emb, out, ["train"], executor)
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stems", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--embedders", default="mel,crepe")
    a = ap.parse_args()
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # private instance on loopback only
    import ray

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ss = make_set(tmp / "set", a.stems, a.seconds)
        n = len(ss.stems)
        t0 = time.perf_counter()
        ray.init(num_cpus=a.workers, include_dashboard=False, log_to_driver=False, logging_level="WARNING",
                 runtime_env={"env_vars": THREAD_ENV})
        start = time.perf_counter() - t0
        ray_ex = Executor("ray", max_in_flight=4 * a.workers)
        for name in a.embedders.split(","):
            opts = {"model": "tiny"} if name == "crepe" else {}
            # warm-up: one stem here and one per Ray worker (imports, weights, first-call allocations)
            warm = StemSet(ss.root)
            warm.stems = warm.stems.iloc[:a.workers]
            run(warm, name, opts, Executor("local"), tmp, f"{name}-warm-local")
            local_s, local_out = run(ss, name, opts, Executor("local"), tmp, f"{name}-local")
            warm_s, _ = run(warm, name, opts, ray_ex, tmp, f"{name}-warm")
            ray_s, ray_out = run(ss, name, opts, ray_ex, tmp, f"{name}-ray")
            same = all((local_out / p.name).read_bytes() == p.read_bytes() for p in ray_out.glob("*.npy"))
            rows.append((name, n, local_s, ray_s, warm_s, same))
        shutdown()
    audio = a.seconds
    import torch

    print(f"{a.stems} stems x {a.seconds:.0f} s (16 kHz mono FLAC); local: {torch.get_num_threads()} torch "
          f"thread(s); Ray: {a.workers} worker processes, 1 CPU + 1 torch thread each; Ray start {start:.1f} s; "
          f"{os.cpu_count()} cores\n")
    print(f"| embedder | local stems/s | Ray x{a.workers} stems/s | speed-up | local x real time | "
          f"Ray x real time | Ray warm-up s | identical |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name, n, ls, rs, ws, same in rows:
        print(f"| {name} | {n / ls:.2f} | {n / rs:.2f} | {ls / rs:.2f}x | {n * audio / ls:.0f} | "
              f"{n * audio / rs:.0f} | {ws:.1f} | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
