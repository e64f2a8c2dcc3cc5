"""Paired comparison of two training sets on the same test songs and seeds: the mean per-song SDR difference
with a percentile bootstrap interval over (song, seed) pairs (Efron & Tibshirani 1993, ch. 13), so a gain is
read against its noise instead of against a single mean."""
from __future__ import annotations

import numpy as np
import pandas as pd


def per_song(table: pd.DataFrame) -> pd.Series:
    """(seed, track_id) -> SDR averaged over the targets (each a median over frames already)."""
    return table.groupby(["seed", "track_id"]).sdr.mean()


def paired_delta(a: pd.DataFrame, b: pd.DataFrame, resamples: int = 2000, seed: int = 0) -> dict | None:
    """Mean of per-song SDR(a) - SDR(b) over the (seed, track) pairs both have, and its 95% bootstrap interval;
    None when they share no pair."""
    d = (per_song(a) - per_song(b)).dropna()
    if d.empty:
        return None
    x = d.to_numpy()
    boots = np.random.default_rng(seed).choice(x, size=(resamples, len(x))).mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"delta_db": round(float(x.mean()), 3), "ci95": [round(float(lo), 3), round(float(hi), 3)],
            "pairs": int(len(x)), "songs": int(d.index.get_level_values("track_id").nunique()),
            "seeds": int(d.index.get_level_values("seed").nunique())}


def paired_ratio(a: pd.DataFrame, top: pd.DataFrame, base: pd.DataFrame, resamples: int = 2000, seed: int = 0) -> dict | None:
    """Share of the base -> top gap that a closes (Blind'25's "gap closed"), mean(a - base) / mean(top - base) over
    the (seed, track) pairs all three have, with a 95% bootstrap interval resampling those pairs jointly."""
    d = pd.concat({"a": per_song(a) - per_song(base), "top": per_song(top) - per_song(base)}, axis=1).dropna()
    if d.empty or abs(d.top.mean()) < 1e-9:
        return None
    x, g = d.a.to_numpy(), d.top.to_numpy()
    idx = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
    num, den = x[idx].mean(axis=1), g[idx].mean(axis=1)
    ok = np.abs(den) > 1e-9
    lo, hi = np.percentile(num[ok] / den[ok], [2.5, 97.5])
    return {"ratio": round(float(x.mean() / g.mean()), 3), "ci95": [round(float(lo), 3), round(float(hi), 3)],
            "pairs": int(len(x))}
