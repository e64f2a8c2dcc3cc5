"""Scoring speed: museval BSSEval v4 per track, serial vs worker processes, side by side; utterance SDR for scale.

    python bench/bench_evaluate.py [--tracks 4] [--seconds 20] [--sample-rate 16000] [--channels 2]
                                   [--workers 2] [--methods spawn[,fork]] [--with-torch]

Every run checks that the parallel scores are bitwise equal to the serial ones. museval's cost per track is
dominated by four solves of a (4 * channels * 512)^2 system (its 512-tap distortion filters), nearly independent
of the track length; the rest grows with it. Defaults stay under 2 minutes on 2 cores (about 10 s per stereo
track serially there); ``--tracks 8 --methods spawn,fork`` takes about 4 minutes. numpy's BLAS threads matter:
serial museval uses all of them, so 2 workers on 2 cores oversubscribe; ``OPENBLAS_NUM_THREADS=1`` in the
environment makes serial slower and parallel faster (serial and parallel still agree bitwise, since both then
use one thread). ``--with-torch`` imports torch and runs a matmul in the parent first (live intra-op threads,
as in the evaluate stage after separation) to show the start methods cope with it.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from stemsift import LABELS
from stemsift.separate import evaluate as ev

BANDS = {"vocals": (300, 1200), "bass": (40, 200), "drums": (2000, 6000), "other": (800, 3000)}


def make_track(seed: int, seconds: float, sr: int, channels: int) -> tuple[dict, dict]:
    """Band-limited noise per target; estimate = target + 10 % leakage of the next target + white noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    f = np.fft.rfftfreq(n, 1 / sr)
    refs = {}
    for lb in LABELS:
        lo, hi = BANDS[lb]
        spec = np.fft.rfft(rng.standard_normal((n, channels)), axis=0)
        spec[(f < lo) | (f > min(hi, sr / 2))] = 0
        x = np.fft.irfft(spec, n=n, axis=0)
        refs[lb] = (0.1 * x / np.max(np.abs(x))).astype(np.float32)
    ests = {lb: (refs[lb] + 0.1 * refs[LABELS[(i + 1) % 4]] + 0.01 * rng.standard_normal((n, channels))
                 ).astype(np.float32) for i, lb in enumerate(LABELS)}
    return refs, ests


def bitwise_equal(a, b) -> bool:
    return (a[["track_id", "target", "frames"]].equals(b[["track_id", "target", "frames"]])
            and all(np.array_equal(a[c].to_numpy().view(np.int64), b[c].to_numpy().view(np.int64))
                    for c in ("sdr", "sdr_utt")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--sample-rate", type=int, default=16000)
    ap.add_argument("--channels", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--methods", default=ev.START_METHOD, help="process start methods to time, e.g. spawn,fork")
    ap.add_argument("--with-torch", action="store_true", help="use torch's thread pool in the parent first")
    a = ap.parse_args()

    if a.with_torch:
        import torch

        x = torch.randn(1000, 1000)
        float((x @ x).sum())

    t0 = time.perf_counter()
    import museval  # noqa: F401  (the parent pays this once; spawned workers pay it again each)
    t_import = time.perf_counter() - t0
    items = [(f"track-{i:03d}", *make_track(i, a.seconds, a.sample_rate, a.channels)) for i in range(a.tracks)]
    print(f"{a.tracks} tracks x {a.seconds:g} s, {a.sample_rate} Hz, {a.channels} ch; museval import "
          f"{t_import:.2f} s (excluded from the serial time)\n")

    t0 = time.perf_counter()
    serial = ev.score_tracks(items, a.sample_rate, workers=1)
    t_serial = time.perf_counter() - t0

    results = [("museval serial", 1, "-", t_serial, True)]
    default_method = ev.START_METHOD
    try:
        for method in [m.strip() for m in a.methods.split(",") if m.strip()]:
            ev.START_METHOD = method
            t0 = time.perf_counter()
            par = ev.score_tracks(items, a.sample_rate, workers=a.workers)
            results.append(("museval parallel", a.workers, method, time.perf_counter() - t0,
                            bitwise_equal(par, serial)))
    finally:
        ev.START_METHOD = default_method

    t0 = time.perf_counter()
    for _tid, refs, ests in items:
        for lb in LABELS:
            ev.utterance_sdr(refs[lb], ests[lb])
    t_utt = time.perf_counter() - t0
    results.append(("utterance SDR", 1, "-", t_utt, True))

    print(f"{'what':<18}{'workers':>8}{'start':>7}{'total s':>10}{'s/track':>10}{'speed-up':>10}{'== serial':>11}")
    for what, w, method, t, same in results:
        print(f"{what:<18}{w:>8}{method:>7}{t:>10.2f}{t / a.tracks:>10.3f}{t_serial / t:>9.2f}x{str(same):>11}")
    s = ev.summarize(serial)
    print("\nsummary:", {k: s[k] for k in ("sdr_avg", "sdr_utt_avg", "tracks")})


if __name__ == "__main__":
    main()
