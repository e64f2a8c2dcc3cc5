"""Embedding speed per registered embedder: seconds to embed N stems and x real time, side by side.

    python bench/bench_embed.py [--stems 8] [--seconds 20] [--embedders mel,crepe,clap,mert]

Input: 16 kHz mono white noise (each embedder resamples to its own rate). mel and crepe (tiny) are the real
thing. No hub weights can be downloaded here, so clap and mert run TINY RANDOMLY INITIALISED stand-ins
(stemsift.embed.hub.save_tiny_random) through the real loading, windowing and feature-extraction code: their
rows measure the front end and plumbing, not the cost of laion/larger_clap_music or MERT-v1-95M. Model load
time is reported apart, after one warm-up call, so the table shows steady-state throughput.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from stemsift.embed import get_embedder

SR = 16000
LABELS = {"mel": "mel (log-mel + 3 descriptors)", "crepe": "crepe tiny (pretrained)",
          "clap": "clap TINY RANDOM stand-in", "mert": "mert TINY RANDOM stand-in"}


def options(name: str, tmp: Path) -> dict:
    if name in ("clap", "mert"):
        from stemsift.embed.hub import save_tiny_random

        return {"model": str(save_tiny_random(name, tmp / name)), **({"layer": 2} if name == "mert" else {})}
    return {"model": "tiny"} if name == "crepe" else {}


def bench(name: str, stems: list[np.ndarray], tmp: Path) -> tuple[float, float, tuple[int, int]]:
    opts = options(name, tmp)
    t0 = time.perf_counter()
    emb = get_embedder(name, opts)
    emb.embed(stems[0][:SR], SR)  # warm-up: lazy imports, FFT plans, first-call allocations
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    shape = None
    for x in stems:
        shape = emb.embed(x, SR).shape
    return load, time.perf_counter() - t0, shape


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stems", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--embedders", default="mel,crepe,clap,mert")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    stems = [(0.1 * rng.standard_normal(int(a.seconds * SR))).astype(np.float32) for _ in range(a.stems)]
    audio_s = a.stems * a.seconds
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.embedders.split(","):
            rows.append((name, *bench(name, stems, Path(tmp))))
    print(f"{a.stems} stems x {a.seconds:.0f} s, 16 kHz mono noise; clap/mert rows are tiny random stand-ins\n")
    print(f"{'embedder':32s} {'load s':>7s} {'embed s':>8s} {'x real time':>12s} {'frames x dim / stem':>20s}")
    for name, load, secs, shape in rows:
        print(f"{LABELS.get(name, name):32s} {load:7.2f} {secs:8.2f} {audio_s / secs:12.0f} "
              f"{f'{shape[0]} x {shape[1]}':>20s}")


if __name__ == "__main__":
    main()
