"""The keep ratio chosen from a cleaner's song scores alone, without retraining (Blind'25's first future-work item).

Methods (``filter.auto.method``):
    gmm       two-component Gaussian mixture on min-max normalised song scores; keep the songs whose posterior of
              the higher-mean ("clean") component is > 0.5 (DivideMix, Li et al. ICLR 2020: sklearn
              GaussianMixture(n_components=2) on normalised per-sample losses)
    beta      two-component beta mixture fitted by EM with weighted moments (Arazo et al., ICML 2019), same rule
    cleanlab  label-based cleaners only: cleanlab.count.num_label_issues on the stems' class probabilities; the
              songs holding the n lowest-quality stems are dropped
Degenerate inputs keep every song and say why in one line: fewer than ``min_songs`` songs, all scores equal, or
scores one component explains (BIC of one Gaussian <= BIC of two, or the two Gaussians overlap: Ashman's
D < ``min_separation``); this two-population test is the same for every method.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

METHODS = ("gmm", "beta", "cleanlab")


@dataclass(frozen=True)
class AutoRatio:
    keep: frozenset[str]          # the songs judged clean
    ratio: float                  # kept share of the songs
    clean_share: float            # the clean component's mixing weight (the estimated share of clean songs)
    method: str
    warning: str = ""             # why everything was kept, when it was

    def metrics(self) -> dict:
        return {"ratio_auto": round(self.ratio, 4), "clean_share_estimated": round(self.clean_share, 4),
                "auto_method": self.method, **({"auto_warning": self.warning} if self.warning else {})}


def _keep_all(songs: pd.Series, method: str, why: str) -> AutoRatio:
    return AutoRatio(frozenset(songs.index), 1.0, 1.0, method, why)


def normalise(x: np.ndarray) -> np.ndarray:
    return (x - x.min()) / (x.max() - x.min())


def gmm_posterior(x: np.ndarray, seed: int = 0) -> tuple[np.ndarray, float, float, float]:
    """P(clean | x) per sample, the clean weight, Ashman's D of the two components, BIC(1) - BIC(2)."""
    from sklearn.mixture import GaussianMixture

    z = x.reshape(-1, 1)
    two = GaussianMixture(2, random_state=seed, n_init=3, reg_covar=1e-4).fit(z)
    one = GaussianMixture(1, random_state=seed, reg_covar=1e-4).fit(z)
    hi = int(np.argmax(two.means_.ravel()))
    mu, var = two.means_.ravel(), two.covariances_.ravel()
    ashman = float(np.sqrt(2) * abs(mu[0] - mu[1]) / np.sqrt(var[0] + var[1]))  # Ashman et al. 1994
    return two.predict_proba(z)[:, hi], float(two.weights_[hi]), ashman, float(one.bic(z) - two.bic(z))


def _beta_fit(x: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Beta parameters by weighted moments (Arazo et al. 2019, eq. 6-7)."""
    m = np.average(x, weights=w)
    v = max(np.average((x - m) ** 2, weights=w), 1e-6)
    common = max(m * (1 - m) / v - 1, 1e-3)
    return m * common, (1 - m) * common


def beta_posterior(x: np.ndarray, iterations: int = 200) -> tuple[np.ndarray, float, float]:
    """P(clean | x) under a two-component beta mixture (EM), the clean weight, and the components' separation."""
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
    means = [a / (a + b) for a, b in params]
    sds = [np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1))) for a, b in params]
    separation = float(np.sqrt(2) * abs(means[1] - means[0]) / np.sqrt(sds[0] ** 2 + sds[1] ** 2))
    if means[1] < means[0]:  # the clean component is the one with the higher mean score
        return 1 - resp, float(1 - resp.mean()), separation
    return resp, float(resp.mean()), separation


def auto_keep(song_scores: pd.Series, method: str = "gmm", seed: int = 0, min_songs: int = 10,
              min_separation: float = 2.0, stems: pd.DataFrame | None = None) -> AutoRatio:
    """The songs to keep from song scores (index = track_id, higher = keep). ``stems`` (track_id, label and
    p_<label> columns) is only read by ``cleanlab``."""
    if method not in METHODS:
        raise ValueError(f"filter.auto.method: {method!r} is not one of {', '.join(METHODS)}")
    s = song_scores.astype(float)
    if len(s) < min_songs:
        return _keep_all(s, method, f"only {len(s)} songs (< {min_songs}): too few to fit a mixture, keeping all")
    if not np.ptp(s.to_numpy()) > 0:
        return _keep_all(s, method, "all song scores are equal: nothing to tell apart, keeping all")
    if method == "cleanlab":
        return _cleanlab_keep(s, stems)
    x = normalise(s.to_numpy())
    post, weight, separation, bic_gain = gmm_posterior(x, seed)  # the two-population test, for every method
    if bic_gain <= 0:
        return _keep_all(s, method, "song scores are unimodal (BIC prefers one Gaussian): keeping all")
    if method == "beta":
        post, weight, _ = beta_posterior(x)
    if separation < min_separation:
        return _keep_all(s, method, f"the two score components overlap (separation {separation:.2f} < "
                                    f"{min_separation:g}): unimodal, keeping all")
    keep = frozenset(s.index[post > 0.5])
    if not keep:
        return _keep_all(s, method, "no song has a clean posterior > 0.5: keeping all")
    return AutoRatio(keep, len(keep) / len(s), weight, method)


def _cleanlab_keep(s: pd.Series, stems: pd.DataFrame | None) -> AutoRatio:
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
    keep = frozenset(s.index) - set(worst)
    if not keep:
        return _keep_all(s, "cleanlab", "cleanlab flags every song: keeping all")
    return AutoRatio(keep, len(keep) / len(s), len(keep) / len(s), "cleanlab")
