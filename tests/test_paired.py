"""Paired set-vs-baseline comparison: the per-song mean difference and its bootstrap interval."""
import numpy as np
import pandas as pd

from stemsift.separate.paired import paired_delta


def table(rng, shift=0.0, seeds=(0, 1), songs=8, noise=0.0):
    rows = [(f"t{i}", t, 2.0 + i * 0.1 + shift + noise * rng.normal(), s) for s in seeds for i in range(songs)
            for t in ("vocals", "bass", "drums", "other")]
    return pd.DataFrame(rows, columns=["track_id", "target", "sdr", "seed"])


def test_paired_delta_is_the_mean_per_song_difference_with_an_interval_around_it():
    rng = np.random.default_rng(0)
    base = table(rng)
    same = paired_delta(base, base)
    assert same == {"delta_db": 0.0, "ci95": [0.0, 0.0], "pairs": 16, "songs": 8, "seeds": 2}
    up = paired_delta(table(rng, shift=0.5), base)
    assert up["delta_db"] == 0.5 and up["ci95"] == [0.5, 0.5]
    noisy = paired_delta(table(rng, shift=0.3, noise=0.5, songs=40), table(rng, songs=40))
    lo, hi = noisy["ci95"]
    assert lo < noisy["delta_db"] < hi and lo < 0.3 < hi and hi - lo < 0.5
    assert paired_delta(table(rng, seeds=(5,)), base) is None  # no shared (seed, song) pair
