"""The keep ratio chosen from a cleaner's song scores alone, without retraining (Blind'25's first future-work item).

The filter keeps the top-r songs by score, so the estimate is a *cut on the sorted scores*: the boundary between
two fitted score populations, r = share of songs above it. (Counting songs whose clean posterior is > 0.5 is not
the same thing: with unequal variances the posterior is not monotone in the score, so a wide clean component
claims far-low songs, or a wide defective one claims the top songs, and r no longer matches the top-r ranking.)

Methods (``filter.auto.method``):
    gmm       two-component Gaussian mixture on min-max normalised song scores (DivideMix, Li et al. ICLR 2020:
              sklearn GaussianMixture(n_components=2) on normalised per-sample losses); the cut is where the clean
              (higher-mean) component's weighted density overtakes the defective one's, searched between the means
    beta      two-component beta mixture fitted by EM with weighted moments (Arazo et al., ICML 2019), same cut
    storey    song p-values against the reference songs (`blind`, or a fusion whose components all have a clean
              null: the scores' `song_p` column, each song's conformal p against the same statistic of the
              reference songs; with calibration: reference the song scores themselves): the share of clean songs is Storey's pi0 = #{p > lambda} / ((1 - lambda) N)
              (Storey, JRSS-B 2002), clipped to [0, 1]: clean songs' p-values are uniform and defective ones pile up
              near 0, so the p-values above lambda are clean songs' almost only; r = pi0, the kept songs the top-r by
              score (p is monotone in it; no two-population test: a world whose scores show no defect keeps ~all
              songs by the estimate itself)
    cleanlab  label-based cleaners only: cleanlab.count.num_label_issues on the stems' class probabilities; the
              songs holding the n lowest-quality stems are the dropped count d, r = 1 - d / N, and the kept songs
              are the top-r by song score (the ranking the filter applies)
Every method first passes the same two-population test on the song scores, else every song is kept with a
one-line reason: fewer than ``min_songs`` songs, all scores equal, BIC of one Gaussian <= BIC of two, a component
lighter than ``min_weight`` (one far outlier forms its own tight component: not a population), or the two
Gaussians overlap (Ashman's D < ``min_separation``; Ashman, Bird & Zepf 1994).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from stemsift.clean.select import keep_top

METHODS = ("gmm", "beta", "storey", "cleanlab")


@dataclass(frozen=True)
class AutoRatio:
    keep: frozenset[str]          # the songs judged clean: the top-r songs by score
    ratio: float                  # kept share of the songs
    clean_share: float            # the clean component's mixing weight (the estimated share of clean songs)
    method: str
    warning: str = ""             # why everything was kept, when it was
    cut: float | None = None      # the score boundary (original scale); songs above it are kept

    def metrics(self) -> dict:
        return {"ratio_auto": round(self.ratio, 4), "clean_share_estimated": round(self.clean_share, 4),
                "auto_method": self.method, **({"auto_cut": round(self.cut, 6)} if self.cut is not None else {}),
                **({"auto_warning": self.warning} if self.warning else {})}


@dataclass(frozen=True)
class TwoPopulations:
    """A two-component Gaussian fit of normalised scores; ``hi`` = the clean (higher-mean) component."""
    means: tuple[float, float]    # (defective, clean)
    sds: tuple[float, float]
    weights: tuple[float, float]
    ashman: float                 # Ashman's D of the two components
    bic_gain: float               # BIC(1 Gaussian) - BIC(2): > 0 when two explain the scores better


def _keep_all(songs: pd.Series, method: str, why: str) -> AutoRatio:
    return AutoRatio(frozenset(songs.index), 1.0, 1.0, method, why)


def normalise(x: np.ndarray) -> np.ndarray:
    return (x - x.min()) / (x.max() - x.min())


def fit_gmm(x: np.ndarray, seed: int = 0) -> TwoPopulations:
    from sklearn.mixture import GaussianMixture

    z = x.reshape(-1, 1)
    two = GaussianMixture(2, random_state=seed, n_init=3, reg_covar=1e-4).fit(z)
    one = GaussianMixture(1, random_state=seed, reg_covar=1e-4).fit(z)
    lo, hi = np.argsort(two.means_.ravel())
    mu, var, w = two.means_.ravel(), two.covariances_.ravel(), two.weights_
    ashman = float(np.sqrt(2) * abs(mu[hi] - mu[lo]) / np.sqrt(var[lo] + var[hi]))
    return TwoPopulations((float(mu[lo]), float(mu[hi])), (float(np.sqrt(var[lo])), float(np.sqrt(var[hi]))),
                          (float(w[lo]), float(w[hi])), ashman, float(one.bic(z) - two.bic(z)))


def gmm_posterior(x: np.ndarray, seed: int = 0) -> tuple[np.ndarray, float, float, float]:
    """P(clean | x) per sample, the clean weight, Ashman's D, BIC(1) - BIC(2) (the former rule; kept for comparison)."""
    from scipy.stats import norm

    f = fit_gmm(x, seed)
    lik = [f.weights[k] * norm.pdf(x, f.means[k], f.sds[k]) + 1e-300 for k in (0, 1)]
    return lik[1] / (lik[0] + lik[1]), f.weights[1], f.ashman, f.bic_gain


def _beta_fit(x: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Beta parameters by weighted moments (Arazo et al. 2019, eq. 6-7)."""
    m = np.average(x, weights=w)
    v = max(np.average((x - m) ** 2, weights=w), 1e-6)
    common = max(m * (1 - m) / v - 1, 1e-3)
    return m * common, (1 - m) * common


def fit_beta(x: np.ndarray, iterations: int = 200) -> tuple[list[tuple[float, float]], np.ndarray]:
    """Two-component beta mixture by EM: [(a, b) defective, (a, b) clean] and their weights (clean = higher mean)."""
    from scipy.stats import beta as beta_dist

    x = np.clip(x, 1e-4, 1 - 1e-4)
    cut = np.median(x)
    for _ in range(100):  # start from a 2-means split (a median split biases unequal shares)
        new = (x[x > cut].mean() + x[x <= cut].mean()) / 2 if (x > cut).any() and (x <= cut).any() else cut
        if abs(new - cut) < 1e-9:
            break
        cut = new
    resp = (x > cut).astype(float) * 0.8 + 0.1
    for _ in range(iterations):
        params = [_beta_fit(x, 1 - resp + 1e-9), _beta_fit(x, resp + 1e-9)]
        weight = np.array([1 - resp.mean(), resp.mean()])
        lik = np.stack([weight[k] * beta_dist.pdf(x, *params[k]) for k in range(2)]) + 1e-300
        resp = lik[1] / lik.sum(0)
    if params[1][0] / sum(params[1]) < params[0][0] / sum(params[0]):
        return params[::-1], weight[::-1]
    return params, weight


def boundary(log_density, lo: float, hi: float, points: int = 4001) -> float:
    """The score where the clean component's weighted log density ``log_density(x) -> (defective, clean)``
    overtakes the defective one's: searched between the two means (lo, hi); where one component dominates that
    whole stretch, the nearest crossing outside it (0 or 1: none on the normalised scale)."""
    def crossing(a: float, b: float) -> float | None:
        x = np.linspace(a, b, points)
        d, c = log_density(x)
        g = c - d
        above = g > 0
        if above.all() or not above.any():
            return None
        last = int(np.flatnonzero(~above)[-1])  # the last defective-dominated point; clean dominates after it
        if last == len(x) - 1:
            return None
        x0, x1, g0, g1 = x[last], x[last + 1], g[last], g[last + 1]
        return float(x0 + (x1 - x0) * (-g0) / (g1 - g0)) if g1 != g0 else float(x0)

    if (cut := crossing(lo, hi)) is not None:
        return cut
    d, c = log_density(np.array([lo, hi]))
    if c[0] > d[0]:  # the clean component dominates even at the defective mean: the crossing lies below it
        return crossing(0.0, lo) if crossing(0.0, lo) is not None else 0.0
    return crossing(hi, 1.0) if crossing(hi, 1.0) is not None else 1.0  # the defective dominates up to the clean mean


def gmm_cut(f: TwoPopulations) -> float:
    from scipy.stats import norm

    return boundary(lambda x: tuple(np.log(f.weights[k]) + norm.logpdf(x, f.means[k], f.sds[k]) for k in (0, 1)),
                    *f.means)


def beta_cut(x: np.ndarray) -> tuple[float, float]:
    """The boundary of the fitted beta mixture on normalised scores, and the clean weight."""
    from scipy.stats import beta as beta_dist

    params, weight = fit_beta(x)
    means = [a / (a + b) for a, b in params]
    eps = 1e-4  # the fit saw scores clipped to [eps, 1 - eps]
    cut = boundary(lambda z: tuple(np.log(weight[k]) + beta_dist.logpdf(np.clip(z, eps, 1 - eps), *params[k])
                                   for k in (0, 1)), *means)
    return cut, float(weight[1])


def population_test(s: pd.Series, seed: int, min_songs: int, min_separation: float,
                    min_weight: float) -> tuple[TwoPopulations | None, str]:
    """The two-population test every method passes first: (the Gaussian fit, "") or (None, why all are kept)."""
    if len(s) < min_songs:
        return None, f"only {len(s)} songs (< {min_songs}): too few to fit a mixture, keeping all"
    if not np.ptp(s.to_numpy()) > 0:
        return None, "all song scores are equal: nothing to tell apart, keeping all"
    f = fit_gmm(normalise(s.to_numpy()), seed)
    if f.bic_gain <= 0:
        return None, "song scores are unimodal (BIC prefers one Gaussian): keeping all"
    if min(f.weights) < min_weight:
        return None, (f"one score component holds only {min(f.weights):.1%} of the songs (< min_weight "
                      f"{min_weight:g}): no second population, keeping all")
    if f.ashman < min_separation:
        return None, (f"the two score components overlap (separation {f.ashman:.2f} < {min_separation:g}): "
                      f"unimodal, keeping all")
    return f, ""


def auto_keep(song_scores: pd.Series, method: str = "gmm", seed: int = 0, min_songs: int = 10,
              min_separation: float = 2.0, stems: pd.DataFrame | None = None, min_weight: float = 0.1,
              storey_lambda: float = 0.5, song_p: pd.Series | None = None) -> AutoRatio:
    """The songs to keep from song scores (index = track_id, higher = keep): the top-r songs, r from the cut.
    ``stems`` (track_id, label and p_<label> columns) is only read by ``cleanlab``; ``song_p`` (index = track_id:
    each song's p-value against the reference songs) only by ``storey``."""
    if method not in METHODS:
        raise ValueError(f"filter.auto.method: {method!r} is not one of {', '.join(METHODS)}")
    s = song_scores.astype(float)
    if method == "storey":
        return storey_keep(s, storey_lambda, min_songs, song_p)
    if method == "cleanlab":
        _cleanlab_issues(stems, s)  # a cleaner without class probabilities fails whatever its scores look like
    f, why = population_test(s, seed, min_songs, min_separation, min_weight)
    if f is None:
        return _keep_all(s, method, why)
    x = normalise(s.to_numpy())
    if method == "cleanlab":
        dropped = _cleanlab_issues(stems, s)
        kept = len(s) - len(dropped)
        share = kept / len(s)
        cut = None
    else:
        if method == "gmm":
            cut, share = gmm_cut(f), f.weights[1]
        else:
            cut, share = beta_cut(x)
        kept = int((x > cut).sum())
        cut = float(s.min() + cut * (s.max() - s.min()))
    if kept == 0:
        return _keep_all(s, method, "no song lies above the clean component's boundary: keeping all")
    ratio = kept / len(s)
    return AutoRatio(frozenset(keep_top(s.rename_axis("track_id"), ratio)), ratio, float(share), method, "", cut)


def storey_pi0(p: np.ndarray, lam: float = 0.5) -> float:
    """Storey's estimate of the share of true nulls among p-values (Storey, JRSS-B 2002, eq. 6), clipped to [0, 1]."""
    return float(min(1.0, np.mean(np.asarray(p) > lam) / (1 - lam)))


def storey_keep(s: pd.Series, lam: float, min_songs: int, song_p: pd.Series | None = None) -> AutoRatio:
    """The top-r songs by score, r = Storey's pi0 of the song p-values (``song_p``, else the scores themselves)."""
    if not 0 < lam < 1:
        raise ValueError(f"filter.auto.storey_lambda: expected a value in (0, 1), got {lam!r}")
    p = s if song_p is None else song_p.astype(float).reindex(s.index)
    if len(s) and not (p.notna().all() and p.between(0, 1).all()):
        raise ValueError("filter.auto.method: storey needs each song's p-value against the reference songs "
                         "(a fusion such as blind writes them as song_p when every component scored its reference split)")
    if len(s) < min_songs:
        return _keep_all(s, "storey", f"only {len(s)} songs (< {min_songs}): too few to estimate a share, keeping all")
    share = storey_pi0(p.to_numpy(), lam)
    kept = max(1, int(round(share * len(s))))
    ratio = kept / len(s)
    keep = frozenset(keep_top(s.rename_axis("track_id"), ratio))
    cut = float(s.loc[list(keep)].min()) if kept < len(s) else None
    return AutoRatio(keep, ratio, share, "storey", "", cut)


def _cleanlab_issues(stems: pd.DataFrame | None, s: pd.Series) -> set[str]:
    """The songs holding the n lowest-quality stems, n = cleanlab's count of label issues."""
    from cleanlab.count import num_label_issues

    from stemsift import LABELS

    cols = [f"p_{lb}" for lb in LABELS]
    if stems is None or not set(cols) <= set(stems.columns):
        raise ValueError("filter.auto.method: cleanlab needs a label-based cleaner's class probabilities "
                         "(mlp or confident); use gmm or beta for this cleaner")
    probs = stems[cols].to_numpy(dtype=float)
    probs = probs / probs.sum(axis=1, keepdims=True)
    labels = stems.label.map({lb: i for i, lb in enumerate(LABELS)}).to_numpy()
    n = int(num_label_issues(labels, probs))
    worst = stems.assign(q=probs[np.arange(len(labels)), labels]).nsmallest(n, "q").track_id
    return set(worst) & set(s.index)
