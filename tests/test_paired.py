"""Paired set-vs-baseline comparison: Δ on the table's statistic, pairing by audio hash, and an interval that counts
seeds as well as songs (its coverage measured by simulation, beside the old pair bootstrap's)."""
import numpy as np
import pandas as pd

from stemsift import LABELS
from stemsift.evidence import seed_means
from stemsift.separate.paired import delta_interval, pair_bootstrap, paired_delta, table_stat


def draw(rng, seeds=3, songs=24, delta=0.3, sd_seed=0.2, sd_song=0.1, sd_e=0.5):
    """Two sets' SDR (seed, target, song): shared song difficulty, the set's level, a per-(set, seed) model effect,
    a per-(set, song) effect and seed x song x target noise. The true Δ (of means and, noise symmetric, of medians)
    is `delta`."""
    song = rng.normal(0, 2, (len(LABELS), songs))
    return [song + (delta if k == 0 else 0.0) + rng.normal(0, sd_seed, (seeds, 1, 1)) + rng.normal(0, sd_song, songs)
            + rng.normal(0, sd_e, (seeds, len(LABELS), songs)) for k in range(2)]


def frame(x, seeds=None, sha=None) -> pd.DataFrame:
    """A per-song table as evaluate writes it, from an (S, T, N) array."""
    s, t, n = x.shape
    rows = [(f"test-{i:03d}", LABELS[j], x[k, j, i], x[k, j, i], 20, (seeds or range(s))[k], (sha or {}).get(i, f"h{i}"))
            for k in range(s) for i in range(n) for j in range(t)]
    return pd.DataFrame(rows, columns=["track_id", "target", "sdr", "sdr_utt", "frames", "seed", "song_sha1"])


def test_seed_aware_interval_reaches_nominal_coverage_where_the_pair_bootstrap_does_not():
    rng, truth, n = np.random.default_rng(7), 0.3, 500
    new = old = 0
    for i in range(n):
        a, b = draw(rng)
        _, lo, hi, _ = delta_interval(a, b, table_stat, resamples=200, seed=i)
        new += lo <= truth <= hi
        _, lo, hi = pair_bootstrap(a, b, resamples=200, seed=i)
        old += lo <= truth <= hi
    print(f"\n95% coverage, 3 seeds x 24 songs x {n} draws: seed-aware {new / n:.3f}, old pair bootstrap {old / n:.3f}")
    assert 0.93 <= new / n <= 0.97
    assert old / n < new / n - 0.2  # the pair bootstrap never sees the seed-to-seed variance


def test_one_lucky_seed_does_not_make_a_gain():
    """Seed 0 gains 0.6 dB, seed 1 loses 0.1: the pairs look like a clear gain, the seeds do not."""
    rng = np.random.default_rng(3)
    base = rng.normal(3, 1, (2, len(LABELS), 24))
    a = base + np.array([0.6, -0.1])[:, None, None] + rng.normal(0, 0.1, base.shape)
    _, lo_old, _ = pair_bootstrap(a, base)
    _, lo, hi, _ = delta_interval(a, base)
    assert lo_old > 0 and lo < 0 < hi


def test_delta_is_the_difference_of_the_sdr_column_and_reports_its_pairs():
    rng = np.random.default_rng(0)
    a, b = draw(rng)
    ta, tb = frame(a), frame(b)
    d = paired_delta(ta, tb)
    assert d["delta_db"] == round(seed_means(ta).mean() - seed_means(tb).mean(), 3)  # the table's own statistic
    assert (d["pairs"], d["unpaired"], d["seeds"], d["songs"], d["paired_on"]) == (72, 0, 3, 24, "audio sha1")
    m = paired_delta(ta, tb, stat="mean")
    assert m["delta_db"] == round(float((a - b).mean()), 3) and m["stat"] == "mean"
    same = paired_delta(ta, ta)
    assert same["delta_db"] == 0.0 and same["ci95"] == [0.0, 0.0]


def test_pairing_is_by_audio_hash_and_says_what_it_left_out():
    rng = np.random.default_rng(1)
    a, b = draw(rng)
    other = frame(b, sha={5: "other-audio"})  # test-005 of b is other audio under the same track id
    d = paired_delta(frame(a), other)
    assert d["songs"] == 23 and d["pairs"] == 69 and d["unpaired"] == 2 * 3  # its rows in both, on 3 seeds
    assert paired_delta(frame(a).drop(columns="song_sha1"), other)["paired_on"] == "track id"  # older tables
    assert paired_delta(frame(a), frame(b, seeds=[5, 6, 7])) is None  # no shared seed: nothing to pair


def test_two_seeds_that_agree_by_chance_do_not_collapse_the_interval():
    """2 seeds x 8 songs: seed 1's song x target differences are seed 0's, shuffled over the songs, so both seeds'
    mean differences agree exactly and the songs do not repeat across seeds. The per-seed spread is 0 and the song
    part near 0, yet the 16 song-seed differences spread widely: the interval must stay as wide as they say (it
    was the point itself before the interaction floor)."""
    for seed in range(3):
        rng = np.random.default_rng(seed)
        base = rng.normal(3, 1, (2, len(LABELS), 8))
        d0 = rng.normal(0.3, 1.0, (len(LABELS), 8))
        d = np.stack([d0, d0[:, rng.permutation(8)]])
        got = paired_delta(frame(base + d), frame(base), stat="mean")
        per_pair = d.mean(axis=1).ravel()                 # (seed, song) differences, mean over targets
        naive = per_pair.std(ddof=1) / np.sqrt(per_pair.size)
        lo, hi = got["ci95"]
        assert hi - lo >= 2 * naive, (got["ci95"], naive)  # at least ± one naive standard error
        assert lo < got["delta_db"] < hi
