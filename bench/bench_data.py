"""Data-stage speed: synthetic rendering (x real time, 1 vs N processes) and contamination, side by side.

    python bench/bench_data.py [--songs 40] [--duration 20] [--workers 2]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from stemsift import LABELS
from stemsift.data.defects import PRESETS, contaminate_song, plan_defects
from stemsift.params import DataParams, SyntheticParams
from stemsift.stages.prepare import render_synthetic
from stemsift.stemset import StemSetWriter


def bench_render(songs: int, duration: float, workers: int) -> tuple[float, Path]:
    tmp = Path(tempfile.mkdtemp())
    p = DataParams(workers=workers, synthetic=SyntheticParams(duration=duration, tracks={"train": songs}))
    t0 = time.perf_counter()
    w = StemSetWriter(tmp, p.sample_rate, p.channels, p.format)
    render_synthetic(p, w)
    w.close()
    return time.perf_counter() - t0, tmp


def bench_contaminate(root: Path, preset: str) -> float:
    from stemsift.stemset import StemSet

    ss = StemSet(root)
    stems = {tid: ss.load_track(tid) for tid in ss.track_ids()}
    t0 = time.perf_counter()
    for i, plan in enumerate(plan_defects(list(stems), preset, 0)):
        if plan.defect != "clean":
            contaminate_song(stems[plan.track_id], plan, ss.sample_rate, np.random.default_rng([0, i]))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--songs", type=int, default=40)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    audio_s = a.songs * a.duration
    rows = []
    for workers in sorted({1, a.workers}):
        secs, root = bench_render(a.songs, a.duration, workers)
        rows.append((f"render + write FLAC, {workers} proc", secs, audio_s / secs))
    for preset in [p for p in PRESETS if p != "none"]:
        secs = bench_contaminate(root, preset)
        rows.append((f"contaminate ({preset}, in memory)", secs, audio_s / secs))
    default_songs = 140
    print(f"{a.songs} songs x {a.duration:.0f} s, {len(LABELS)} stems, 16 kHz stereo\n")
    print(f"{'step':36s} {'seconds':>8s} {'x real time':>12s}")
    for name, secs, rt in rows:
        print(f"{name:36s} {secs:8.2f} {rt:12.0f}")
    best = min(s for n, s, _ in rows if n.startswith("render"))
    print(f"\nprojected default set ({default_songs} songs): {best * default_songs / a.songs:.1f} s to render and write")
    print(f"speed-up {a.workers} proc vs 1: {rows[0][1] / rows[len({1, a.workers}) - 1][1]:.2f}x")


if __name__ == "__main__":
    main()
