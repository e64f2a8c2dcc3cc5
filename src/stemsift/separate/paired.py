"""Paired comparison of training sets evaluated on the same test songs with the same seeds: Δ SDR and "gap closed"
on the table's own statistic, with intervals that count seeds as well as songs.

Design: seeds and songs are crossed random factors (every seed's model is scored on every song), so the variance of
a Δ has a seed part (σ²_seed/S), a shared-song part (σ²_song/N) and an interaction part (σ²_e/SN) (Cornfield &
Tukey 1956; Searle, Casella & McCulloch 1992 §4.6). Resampling (seed, song) pairs as if independent (the old
`pair_bootstrap_ci`) misses the seed part; a two-stage bootstrap (seeds, then songs) has only 3 (2 seeds) or 10
(3 seeds) distinct seed draws and shrinks the seed variance by (S-1)/S, so its percentile interval under-covers
too (Davison & Hinkley 1997 §3.8; Field & Welsh 2007). So the two parts are estimated without bias: the seed part
from the spread of the per-seed statistics (S-1 df), the shared-song part from the song bootstrap (songs resampled
jointly across seeds minus independently per seed, which isolates σ²_song/N for any statistic; for a mean it is
the ANOVA estimate (MS_song - MS_err)/SN exactly). With 2-3 seeds a Satterthwaite (1946) t under-covers (88-94 %
by simulation: its df grows exactly when the seed part is underestimated), so the interval is the generalized
(fiducial) one (Weerahandi 1993; Krishnamoorthy & Mathew 2009 §2): each part divided by its own χ²/df draw, which
is exact with one dominant part and conservative in between. The per-seed spread estimates the seed and the
seed × song interaction variance together with only S-1 df, so in the pivot it is floored, draw by draw, by the
interaction part alone (σ²_e/SN from the song
bootstrap: S·independent - joint, (S-1)(N-1) df); with 2 seeds whose statistics agree by chance the interval no
longer collapses onto the point. Coverage by simulation: `COVERAGE` (bench/bench_paired.py)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

# share of 95 % intervals holding the true Δ over 1000 simulated draws (bench/bench_paired.py: 24 songs x 4 targets,
# 200 song resamples; Δ sd per seed, per song, seed x song x target): seed-dominated (0.28, 0.14, 0.71),
# song-dominated (0.03, 0.42, 0.71), interaction only (0, 0, 1). Generalized interval with the interaction floor:
# nominal to conservative; without the floor it was nominal but collapsed onto the point in up to 1.1 % of draws
# (half-width below a quarter of the Δ's sd; never with the floor); the old pair bootstrap and a two-stage (seeds,
# then songs) percentile bootstrap under-cover.
COVERAGE = {
    "3 seeds, seed-dominated": {"table statistic": 0.965, "mean": 0.957, "without the floor": 0.950, "old pair bootstrap": 0.424, "two-stage bootstrap": 0.930},
    "2 seeds, seed-dominated": {"table statistic": 0.984, "mean": 0.962, "without the floor": 0.957, "old pair bootstrap": 0.421, "two-stage bootstrap": 0.917},
    "3 seeds, song-dominated": {"table statistic": 0.990, "mean": 0.976, "without the floor": 0.973, "old pair bootstrap": 0.780, "two-stage bootstrap": 0.992},
    "2 seeds, song-dominated": {"table statistic": 1.000, "mean": 0.993, "without the floor": 0.982, "old pair bootstrap": 0.855, "two-stage bootstrap": 0.996},
    "2 seeds, interaction only": {"table statistic": 0.999, "mean": 0.997, "without the floor": 0.963, "old pair bootstrap": 0.934, "two-stage bootstrap": 0.999},
}


@dataclass(frozen=True)
class Aligned:
    """Sets on their shared (seed, song) grid: arrays (S, T, N) of SDR per seed, target, song."""
    x: dict[str, np.ndarray]
    seeds: list
    songs: list
    targets: list
    paired_on: str                    # "audio sha1" (per-song table has song_sha1) or "track id" (older tables)
    unpaired: int                     # (seed, song) rows of any set that are not on the shared grid

    @property
    def pairs(self) -> int:
        return len(self.seeds) * len(self.songs)


def align(tables: dict[str, pd.DataFrame]) -> Aligned | None:
    """The largest balanced grid every table shares: common seeds, and the songs (by audio sha1 where every table
    records it, else by track id) that every one of those seeds has for every target in every table. None: nothing
    shared."""
    by_sha = all("song_sha1" in t for t in tables.values())
    key = "song_sha1" if by_sha else "track_id"
    seeds = sorted(set.intersection(*(set(t.seed.unique()) for t in tables.values())))
    targets = sorted(set.intersection(*(set(t.target.unique()) for t in tables.values())))
    if not seeds or not targets:
        return None
    complete = None
    for t in tables.values():
        c = t[t.seed.isin(seeds) & t.target.isin(targets)].groupby([key, "seed"]).target.nunique()
        full = c[c == len(targets)].reset_index().groupby(key).seed.nunique()
        ok = set(full[full == len(seeds)].index)
        complete = ok if complete is None else complete & ok
    songs = sorted(complete)
    if not songs:
        return None
    x = {}
    for name, t in tables.items():
        t = t[t.seed.isin(seeds) & t.target.isin(targets) & t[key].isin(songs)]
        cube = t.groupby(["seed", "target", key]).sdr.first().unstack(key)
        x[name] = cube.reindex(index=pd.MultiIndex.from_product([seeds, targets]), columns=songs).to_numpy(float).reshape(
            len(seeds), len(targets), len(songs))
    everyone = sum(int(t.groupby(["seed", key]).ngroups) for t in tables.values())
    return Aligned(x, seeds, songs, targets, "audio sha1" if by_sha else "track id",
                   everyone - len(tables) * len(seeds) * len(songs))


# ----------------------------------------------------------------------------- statistics on (..., T, N) arrays
def table_stat(x: np.ndarray) -> np.ndarray:
    """museval's model score per seed, the SDR column's statistic: median over songs per target, then the mean."""
    med = np.nanmedian(x, axis=-1) if np.isnan(x).any() else np.median(x, axis=-1)
    return np.nanmean(med, axis=-1)


def mean_stat(x: np.ndarray) -> np.ndarray:
    """Mean over targets and songs (the old Δ's statistic: mean per-song difference)."""
    return np.nanmean(x, axis=(-1, -2))


STATS = {"table": table_stat, "mean": mean_stat}


@dataclass(frozen=True)
class Components:
    """A statistic of K sets on a (seed, song) grid, split into what the variance decomposition needs."""
    point: np.ndarray                 # (K,) the statistic (mean over seeds of the per-seed values)
    per_seed: np.ndarray              # (S, K)
    v_seed: np.ndarray                # (K, K) covariance of the seed part: Cov(per_seed) / S
    v_song: np.ndarray                # (K, K) covariance of the shared-song part (joint - independent bootstrap)
    v_inter: np.ndarray               # (K, K) covariance of the seed x song interaction part σ²_e/SN (a floor of v_seed)
    s: int
    n: int


def components(xs: list[np.ndarray], stat=table_stat, resamples: int = 1000, seed: int = 0) -> Components:
    """xs: K arrays (S, T, N) on one grid. Songs are resampled with the same indices in every set (paired)."""
    x = np.stack(xs, axis=2)                                 # (S, T, K, N)
    s, _, k, n = x.shape
    per_seed = np.stack([stat(x[i].transpose(1, 0, 2)) for i in range(s)])   # (S, K)
    point = per_seed.mean(axis=0)
    v_seed = np.cov(per_seed, rowvar=False, ddof=1).reshape(k, k) / s if s > 1 else np.full((k, k), np.nan)
    if n < 2:
        return Components(point, per_seed, v_seed, np.zeros((k, k)), np.zeros((k, k)), s, n)
    rng = np.random.default_rng(seed)
    xt = x.transpose(0, 3, 2, 1)                             # (S, N, K, T)
    joint = rng.integers(0, n, size=(resamples, n))
    indep = rng.integers(0, n, size=(resamples, s, n))
    # (S, B, N, K, T) -> songs last -> statistic per (seed, resample, set), then the mean over seeds
    bj = stat(xt[:, joint].transpose(0, 1, 3, 4, 2)).mean(axis=0)                          # (B, K)
    bi = stat(xt[np.arange(s)[None, :, None], indep].transpose(0, 1, 3, 4, 2)).mean(axis=1)  # (B, K)
    cj, ci = (np.cov(b, rowvar=False, ddof=1).reshape(k, k) for b in (bj, bi))
    # joint - independent = σ²_song/N (1 - 1/S); the bootstrap's (N-1)/N shrinkage undone (Efron & Tibshirani §5)
    v_song = (cj - ci) * s / (s - 1) * n / (n - 1) if s > 1 else cj * n / (n - 1)
    # S·independent - joint = σ²_e/N (1 - 1/S): the interaction part σ²_e/SN, which the per-seed spread also holds
    v_inter = (s * ci - cj) / (s - 1) * n / (n - 1) if s > 1 else np.zeros((k, k))
    return Components(point, per_seed, v_seed, v_song, v_inter, s, n)


def _seed_part(c: Components) -> np.ndarray:
    """The seed part's covariance for Fieller's quadratic, floored by the interaction part: v_seed + (v_inter -
    v_seed)₊ (positive part of the symmetric difference), so every linear combination's seed part is at least its
    interaction part (and its spread part; conservative where the two cross)."""
    if c.s < 2:
        return np.zeros_like(c.v_song)
    vals, vecs = np.linalg.eigh(c.v_inter - c.v_seed)
    return c.v_seed + (vecs * np.clip(vals, 0, None)) @ vecs.T


def _parts(c: Components, w: np.ndarray) -> tuple[float, float, float, float]:
    """(estimate, seed part, song part, interaction part) of the variance of the linear combination w · statistic.
    The seed part (the per-seed spread) holds the interaction part too; `half_width` floors the one by the other."""
    song = max(float(w @ c.v_song @ w), 0.0)  # a negative variance estimate: 0 (the usual truncation)
    if c.s < 2:
        return float(w @ c.point), 0.0, song, 0.0  # one seed: no seed part to estimate (labelled)
    return float(w @ c.point), max(float(w @ c.v_seed @ w), 0.0), song, max(float(w @ c.v_inter @ w), 0.0)


@lru_cache(maxsize=64)
def _pivot_draws(s: int, n: int, draws: int = 20000) -> tuple[np.ndarray, ...]:
    """|Z|, χ²_{S-1}/(S-1), χ²_{N-1}/(N-1), χ²_{(S-1)(N-1)}/((S-1)(N-1)): the generalized pivot's ingredients
    (fixed draws: deterministic)."""
    rng = np.random.default_rng(12345)
    chi = lambda df: rng.chisquare(max(df, 1), draws) / max(df, 1)  # noqa: E731
    return np.abs(rng.standard_normal(draws)), chi(s - 1), chi(n - 1), chi((s - 1) * (n - 1))


def half_width(seed: float, song: float, s: int, n: int, level: float = 0.95, inter: float = 0.0) -> float:
    """The generalized interval's half-width: the `level` quantile of |Z| √(max(seed/χ²ₛ, inter/χ²ᵢ) + song/χ²ₙ)
    (Weerahandi 1993). The seed part (per-seed spread, S-1 df) estimates seed + interaction variance, so draw by
    draw it is at least the interaction part's pivot ((S-1)(N-1) df): with 2 seeds whose statistics agree by chance
    the interval no longer collapses onto the point; with inter = 0 it is the plain two-part pivot."""
    if seed + song + inter <= 0:
        return 0.0
    z, a, b, i = _pivot_draws(s, n)
    return float(np.quantile(z * np.sqrt(np.maximum(seed / a, inter / i) + song / b), level))


def _scope(c: Components) -> str:
    return "seeds and songs" if c.s > 1 else "songs only (one seed: seed-to-seed variance unknown)"


def _r(x: float) -> float:
    return round(float(x), 3)


def delta_interval(a: np.ndarray, b: np.ndarray, stat=table_stat, resamples: int = 1000, seed: int = 0
                   ) -> tuple[float, float, float, Components]:
    """(Δ, lo, hi, components) of statistic(a) - statistic(b) for two (S, T, N) arrays on one grid."""
    c = components([a, b], stat, resamples, seed)
    est, seed_v, song_v, inter_v = _parts(c, np.array([1.0, -1.0]))
    h = half_width(seed_v, song_v, c.s, c.n, inter=inter_v)
    return est, est - h, est + h, c


# ----------------------------------------------------------------------------- what the tables report
def paired_delta(a: pd.DataFrame, b: pd.DataFrame, resamples: int = 1000, seed: int = 0, stat: str = "table"
                 ) -> dict | None:
    """Δ = statistic(a) - statistic(b) on the (seed, song) grid both have, with its seed-aware 95% interval.
    stat "table": the SDR column's statistic (so Δ is the difference of the two SDR entries when nothing is
    unpaired); "mean": the mean per-song difference. None when they share no (seed, song)."""
    al = align({"a": a, "b": b})
    if al is None:
        return None
    est, lo, hi, c = delta_interval(al.x["a"], al.x["b"], STATS[stat], resamples, seed)
    return {"delta_db": _r(est), "ci95": [_r(lo), _r(hi)], "ci_over": _scope(c),
            "pairs": al.pairs, "unpaired": al.unpaired, "songs": len(al.songs), "seeds": len(al.seeds),
            "paired_on": al.paired_on, "stat": stat}


def paired_ratio(a: pd.DataFrame, top: pd.DataFrame, base: pd.DataFrame, resamples: int = 1000, seed: int = 0,
                 stat: str = "table") -> dict | None:
    """Gap closed (Blind'25): (stat(a) - stat(base)) / (stat(top) - stat(base)) on the grid all three share, with
    Fieller's (1954) 95% interval under the same variance decomposition (its t the generalized pivot's quantile). The ratio means nothing unless the oracle
    gap is > 0: a gap ≤ 0 gives no ratio, and a gap not clearly > 0 (Fieller's set unbounded) gives the ratio
    with no interval, flagged (`flag`), never an interval averaged over resamples of either sign. None: no shared
    (seed, song)."""
    al = align({"a": a, "top": top, "base": base})
    if al is None:
        return None
    c = components([al.x["a"], al.x["top"], al.x["base"]], STATS[stat], resamples, seed)
    num_w, den_w = np.array([1.0, 0.0, -1.0]), np.array([0.0, 1.0, -1.0])
    num, den = float(num_w @ c.point), float(den_w @ c.point)
    out = {"ratio": None, "ci95": None, "flag": None, "pairs": al.pairs, "unpaired": al.unpaired,
           "paired_on": al.paired_on, "gap_db": _r(den), "ci_over": _scope(c)}
    if den <= 1e-9:
        return {**out, "flag": f"oracle gap {den:+.3f} dB ≤ 0: gap closed undefined"}
    ratio = num / den
    _, seed_v, song_v, inter_v = _parts(c, num_w - ratio * den_w)  # the pivot's quantile for the linearised statistic
    point_v = max(seed_v, inter_v) + song_v
    t2 = half_width(seed_v, song_v, c.s, c.n, inter=inter_v) ** 2 / point_v if point_v > 0 else 0.0
    seed_part = _seed_part(c)

    def var(w1, w2):  # the decomposed covariance of two linear combinations
        return float(w1 @ c.v_song @ w2 + w1 @ seed_part @ w2)
    # Fieller: {ρ : (num - ρ den)² ≤ t² Var(num - ρ den)}, a quadratic A ρ² - 2 B ρ + C ≤ 0
    A = den ** 2 - t2 * var(den_w, den_w)
    B = num * den - t2 * var(num_w, den_w)
    C = num ** 2 - t2 * var(num_w, num_w)
    if A <= 0 or B * B - A * C < 0:
        return {**out, "ratio": _r(ratio), "flag": "oracle gap not clearly > 0 (Fieller's 95% set is unbounded)"}
    r = np.sqrt(B * B - A * C)
    return {**out, "ratio": _r(ratio), "ci95": [_r((B - r) / A), _r((B + r) / A)]}


def pair_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """The old interval, kept to show what it missed: mean per-song difference with a percentile bootstrap over
    (seed, song) pairs treated as independent (Efron & Tibshirani 1993, ch. 13); ignores the seed-to-seed variance."""
    d = np.nanmean(a - b, axis=1).ravel()                     # (S*N,) per (seed, song), mean over targets
    boots = d[np.random.default_rng(seed).integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return float(d.mean()), float(lo), float(hi)


def pair_bootstrap_ci(a: pd.DataFrame, b: pd.DataFrame, resamples: int = 1000, seed: int = 0) -> dict | None:
    """pair_bootstrap on two per-song tables (for the side-by-side column `delta_mean_ci95_old`)."""
    al = align({"a": a, "b": b})
    if al is None:
        return None
    est, lo, hi = pair_bootstrap(al.x["a"], al.x["b"], resamples, seed)
    return {"delta_db": _r(est), "ci95": [_r(lo), _r(hi)], "pairs": al.pairs}
