"""Coverage of the paired Δ intervals by simulation: tables with a known effect, seed, song and seed × song noise.

Each draw is two sets' SDR (seed, target, song) with a shared song difficulty, a per-(set, seed) model effect, a
per-(set, song) effect and seed × song × target noise; the true Δ is known. Per setting it prints, side by side,
the share of 95 % intervals that hold it and how often an interval collapses (half-width below a quarter of the
Δ's true standard deviation, measured over the draws):

- the seed-aware interval of separate/paired.py (table statistic, and the mean difference),
- the same pivot without the interaction floor (the interval before it),
- the old pair bootstrap ((seed, song) pairs as if independent),
- a two-stage percentile bootstrap (seeds, then songs).

    python bench/bench_paired.py                     # 1,000 draws per setting, 24 songs x 4 targets
    python bench/bench_paired.py --draws 200         # a quicker look
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from stemsift import LABELS
from stemsift.separate.paired import _parts, components, half_width, mean_stat, pair_bootstrap, table_stat

# name -> (seeds, Δ sd per seed, per song, seed x song x target)
SETTINGS = {
    "3 seeds, seed-dominated": (3, 0.28, 0.14, 0.71),
    "2 seeds, seed-dominated": (2, 0.28, 0.14, 0.71),
    "3 seeds, song-dominated": (3, 0.03, 0.42, 0.71),
    "2 seeds, song-dominated": (2, 0.03, 0.42, 0.71),
    "2 seeds, interaction only": (2, 0.0, 0.0, 1.0),
}


def draw(rng, seeds: int, songs: int, sd_seed: float, sd_song: float, sd_e: float, delta: float = 0.3):
    """Two sets (S, T, N); the Δ per seed, per song and per cell has the given sds (each set carries half the
    variance of each Δ part); the true Δ of means and, noise symmetric, of medians is `delta`."""
    song = rng.normal(0, 2, (len(LABELS), songs))
    half = np.sqrt(0.5)
    return [song + (delta if k == 0 else 0.0) + rng.normal(0, sd_seed * half, (seeds, 1, 1))
            + rng.normal(0, sd_song * half, songs) + rng.normal(0, sd_e * half, (seeds, len(LABELS), songs))
            for k in range(2)]


def two_stage(a: np.ndarray, b: np.ndarray, stat, resamples: int, seed: int) -> tuple[float, float]:
    """Percentile interval of a bootstrap that resamples seeds, then songs (shared across the chosen seeds)."""
    rng = np.random.default_rng(seed)
    s, _, n = a.shape
    out = np.empty(resamples)
    for r in range(resamples):
        si, ni = rng.integers(0, s, s), rng.integers(0, n, n)
        out[r] = stat(a[si][:, :, ni]).mean() - stat(b[si][:, :, ni]).mean()
    return tuple(np.percentile(out, [2.5, 97.5]))


def run(draws: int, songs: int, resamples: int) -> pd.DataFrame:
    rows = []
    for name, (seeds, sd_seed, sd_song, sd_e) in SETTINGS.items():
        rng = np.random.default_rng(2024)
        got = {k: [] for k in ("est", "table", "mean", "no floor", "pair", "two-stage", "hw table", "hw no floor")}
        for i in range(draws):
            a, b = draw(rng, seeds, songs, sd_seed, sd_song, sd_e)
            for stat_name, stat in (("table", table_stat), ("mean", mean_stat)):
                c = components([a, b], stat, resamples, i)
                est, seed_v, song_v, inter_v = _parts(c, np.array([1.0, -1.0]))
                h = half_width(seed_v, song_v, c.s, c.n, inter=inter_v)
                got[stat_name].append(abs(est - 0.3) <= h)
                if stat_name == "table":
                    h0 = half_width(seed_v, song_v, c.s, c.n)  # the pivot without the interaction floor
                    got["est"].append(est)
                    got["no floor"].append(abs(est - 0.3) <= h0)
                    got["hw table"].append(h)
                    got["hw no floor"].append(h0)
            _, lo, hi = pair_bootstrap(a, b, resamples, i)
            got["pair"].append(lo <= 0.3 <= hi)
            lo, hi = two_stage(a, b, table_stat, resamples, i)
            got["two-stage"].append(lo <= 0.3 <= hi)
        sd = float(np.std(got["est"], ddof=1))  # the table statistic's Δ: its true sd, over the draws
        rows.append({"setting": name, "new, table statistic": np.mean(got["table"]), "new, mean": np.mean(got["mean"]),
                     "without the floor": np.mean(got["no floor"]), "old pair bootstrap": np.mean(got["pair"]),
                     "two-stage bootstrap": np.mean(got["two-stage"]),
                     "collapsed, new": np.mean(np.array(got["hw table"]) < sd / 4),
                     "collapsed, without the floor": np.mean(np.array(got["hw no floor"]) < sd / 4),
                     "Δ sd": sd})
        print(f"  {name}: done", file=sys.stderr, flush=True)
    return pd.DataFrame(rows).set_index("setting")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--songs", type=int, default=24)
    ap.add_argument("--resamples", type=int, default=200)
    a = ap.parse_args()
    table = run(a.draws, a.songs, a.resamples)
    print(f"95 % coverage and collapse rate, {a.draws} draws per setting, {a.songs} songs x {len(LABELS)} targets, "
          f"{a.resamples} song resamples (collapsed: half-width < Δ sd / 4):")
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(table.round(3).to_string())


if __name__ == "__main__":
    main()
