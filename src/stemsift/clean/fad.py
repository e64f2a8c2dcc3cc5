"""`fad`: per-stem Fréchet Audio Distance to the clean reference stems of the same label (score = -FAD), or with
``neighbours: collection`` to its nearest stems of the label among the references and the collection's other songs.

As fadtk's per-song scoring (microsoft/fadtk, fad.py): FAD = ||mu1 - mu2||^2 + Tr C1 + Tr C2 - 2 Tr sqrt(C1 C2),
with the matrix square root taken by a symmetric eigendecomposition so the result is never complex or
negative (fadtk issue 38); rank-deficient covariances (short or silent stems) are shrunk towards a scaled
identity first.
"""
from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd

from stemsift import LABELS
from stemsift.clean.base import Cleaner, CleanerError, StemView, register, sample_songs

EPS = 1e-12


def gaussian(frames: np.ndarray, shrinkage: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (shrunk) covariance of frame embeddings (frames x dim), float64."""
    x = np.asarray(frames, dtype=np.float64)
    mu = x.mean(axis=0)
    cov = np.cov(x, rowvar=False) if len(x) > 1 else np.zeros((x.shape[1], x.shape[1]))
    cov = np.atleast_2d(cov)
    if shrinkage > 0:  # Ledoit-Wolf-style target: the mean variance on the diagonal
        cov = (1 - shrinkage) * cov + shrinkage * (np.trace(cov) / len(cov)) * np.eye(len(cov))
    return mu, cov


def _sqrt_psd(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, c1: np.ndarray, mu2: np.ndarray, c2: np.ndarray) -> float:
    """Fréchet distance of two Gaussians; Tr sqrt(C1 C2) = sum sqrt(eig(sqrt(C1) C2 sqrt(C1))), all PSD."""
    s1 = _sqrt_psd(c1)
    eig = np.linalg.eigvalsh(s1 @ c2 @ s1)
    tr_sqrt = float(np.sqrt(np.clip(eig, 0, None)).sum())
    d = float(((mu1 - mu2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * tr_sqrt)
    return max(d, 0.0)


REFERENCES = ("pooled", "nearest")
CALIBRATIONS = ("median", "reference")
NEIGHBOURS = ("reference", "collection")


def stem_distance(frames: np.ndarray, refs: list[tuple[np.ndarray, np.ndarray]], k: int, shrinkage: float) -> float:
    """One stem's FAD to the reference Gaussians: to the single pooled one, or the mean of its k smallest, averaged
    over the reference sets that leave one reference stem out (so it is scored like a reference stem is against the
    others: the clean null and the training stems see n - 1 references each)."""
    g = gaussian(frames, shrinkage)
    d = np.sort([frechet_distance(*g, *r) for r in refs])
    n = len(d)
    if n <= k:
        return float(d[:k].mean())
    # leaving out one of the k nearest brings in the (k+1)-th; leaving out any other changes nothing
    with_next = (d[:k + 1].sum() - d[:k]) / k
    return float(((n - k) * d[:k].mean() + with_next.sum()) / n)


def reference_distances(stems, refs: list[np.ndarray], reference: str, k: int,
                        shrinkage: float, map_fn=None) -> tuple[np.ndarray, np.ndarray]:
    """FAD of every stem to the reference stems of its label, and the same for each reference stem left out
    of its own reference (the spread clean stems of this label show). ``pooled``: one Gaussian of all
    reference frames (fadtk); ``nearest``: the mean FAD to the k closest reference stems, so a stem is compared
    with clean stems of a similar instrument rather than with the label's whole variety."""
    map_fn = map_fn or (lambda fn, items: [fn(x) for x in items])  # or StemView.map: tasks of the executor
    ref_g = [gaussian(e, shrinkage) for e in refs]
    if reference == "pooled":
        pooled = gaussian(np.concatenate(refs), shrinkage)
        fad = np.array(map_fn(partial(stem_distance, refs=[pooled], k=1, shrinkage=shrinkage), stems))
        loo = np.array([frechet_distance(*ref_g[i], *gaussian(np.concatenate(refs[:i] + refs[i + 1:]), shrinkage))
                        for i in range(len(refs))]) if len(refs) > 1 else np.ones(1)
        return fad, loo
    kk = max(1, min(int(k), len(refs) - 1 if len(refs) > 1 else 1))
    pair = np.array([[frechet_distance(*ref_g[i], *ref_g[j]) if i != j else np.inf for j in range(len(refs))]
                     for i in range(len(refs))])
    loo = np.sort(pair, axis=1)[:, :kk].mean(axis=1) if len(refs) > 1 else np.ones(1)
    fad = np.array(map_fn(partial(stem_distance, refs=ref_g, k=kk, shrinkage=shrinkage), stems))
    return fad, loo


def candidate(frames: np.ndarray, shrinkage: float) -> tuple:
    """A stem as a neighbour: mean, covariance, its square root and the root of its trace (for the lower bound)."""
    mu, cov = gaussian(frames, shrinkage)
    return mu, cov, _sqrt_psd(cov), float(np.sqrt(max(np.trace(cov), 0.0)))


def nearest_distance(item: tuple[np.ndarray, str], cands: list[tuple], songs: np.ndarray, k: int,
                     shrinkage: float) -> float:
    """Mean FAD of one stem (frames, song) to its k nearest candidates from other songs. Exact, with most FADs
    skipped: FAD >= ||mu1 - mu2||^2 + (sqrt Tr C1 - sqrt Tr C2)^2 (Tr sqrt(C1 C2) <= sqrt(Tr C1 Tr C2), Hoelder),
    so candidates are visited by that bound and the search stops once the bound passes the k-th distance found."""
    frames, song = item
    mu, cov = gaussian(frames, shrinkage)
    root = float(np.sqrt(max(np.trace(cov), 0.0)))
    others = np.flatnonzero(songs != song)
    if not len(others):
        raise CleanerError("fad: neighbours: collection needs stems of at least two songs per label")
    bound = np.array([((mu - cands[j][0]) ** 2).sum() + (root - cands[j][3]) ** 2 for j in others])
    order = np.argsort(bound, kind="stable")
    kk, best = min(k, len(others)), []
    for j, b in zip(others[order], bound[order]):
        if len(best) == kk and b >= best[-1]:
            break
        m2, c2, s2, _ = cands[j]
        tr_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh(s2 @ cov @ s2), 0, None)).sum())
        d = max(float(((mu - m2) ** 2).sum() + np.trace(cov) + np.trace(c2) - 2 * tr_sqrt), 0.0)
        best = sorted(best + [d])[:kk]
    return float(np.mean(best))


@register
class FadCleaner(Cleaner):
    name = "fad"
    needs = ("embeddings",)
    defaults = {"shrinkage": 0.01, "reference": "nearest", "k": 3, "calibration": "reference", "song": "mean",
                "neighbours": "reference", "collection_songs": 100}

    def score_stems(self, view: StemView) -> np.ndarray:
        o = self.options
        if o["reference"] not in REFERENCES:
            raise CleanerError(f"fad.reference: {o['reference']!r} is not one of {', '.join(REFERENCES)}")
        if o["calibration"] not in CALIBRATIONS:
            raise CleanerError(f"fad.calibration: {o['calibration']!r} is not one of {', '.join(CALIBRATIONS)}")
        if o["song"] not in ("mean", "min"):
            raise CleanerError(f"fad.song: {o['song']!r} is not one of mean, min")
        if o["neighbours"] not in NEIGHBOURS:
            raise CleanerError(f"fad.neighbours: {o['neighbours']!r} is not one of {', '.join(NEIGHBOURS)}")
        if o["neighbours"] == "collection" and o["reference"] != "nearest":
            raise CleanerError(f"fad.reference: {o['reference']!r} with neighbours: collection (the k nearest stems); "
                               "use reference: nearest or neighbours: reference")
        songs = o["collection_songs"]
        if not isinstance(songs, int) or isinstance(songs, bool) or songs < 1:
            raise CleanerError(f"fad.collection_songs: expected a positive integer, got {o['collection_songs']!r}")
        scores = np.empty(len(view.train))
        nulls = []
        learnt = sample_songs(view.train.track_id, o["collection_songs"], self.seed)
        for label in LABELS:  # each target's own clean distribution
            rows = np.flatnonzero(view.train.label.to_numpy() == label)
            if not len(rows):
                continue
            ref_rows = view.reference[view.reference.label == label]
            refs = view.embed(ref_rows)
            if not refs:
                raise CleanerError(f"fad: no reference stem labelled {label!r} to compare with")
            if o["neighbours"] == "collection":
                fad, loo = self._collection_distances(view, view.train.iloc[rows], ref_rows, refs, learnt)
            else:
                stems = (view.embeddings(sha) for sha in view.train.sha1.iloc[rows])  # loaded as tasks are sent
                fad, loo = reference_distances(stems, refs, o["reference"], int(o["k"]), float(o["shrinkage"]), view.map)
            if o["calibration"] == "median":
                scores[rows], null = -fad, -loo
            else:  # z of log FAD against the reference stems' own leave-one-out FADs of this label
                ll = np.log(loo + EPS)
                sd = ll.std(ddof=1) if len(ll) > 1 and ll.std(ddof=1) > 0 else 1.0
                scores[rows], null = -(np.log(fad + EPS) - ll.mean()) / sd, -(ll - ll.mean()) / sd
            if len(refs) > 1:  # each reference stem against the others: scored out of sample, the clean null
                nulls.append(ref_rows[["track_id", "label"]].assign(score=null))
        self.null = pd.concat(nulls, ignore_index=True) if nulls else None
        return scores

    def _collection_distances(self, view: StemView, train: pd.DataFrame, ref_rows: pd.DataFrame, refs: list,
                              learnt: set) -> tuple[np.ndarray, np.ndarray]:
        """``neighbours: collection``: every training and reference stem against its k nearest among the label's
        reference stems and the training stems of (at most ``collection_songs``) sampled songs, never its own song:
        the collection, mostly clean, shows what this label sounds like here; the reference stems, scored the same
        way, are the clean null."""
        o, shrink = self.options, float(self.options["shrinkage"])
        pool = train[train.track_id.isin(learnt)]
        cands = [candidate(e, shrink) for e in refs] + [candidate(view.embeddings(sha), shrink) for sha in pool.sha1]
        songs = np.concatenate([ref_rows.track_id.to_numpy(), pool.track_id.to_numpy()]).astype(str)
        fn = partial(nearest_distance, cands=cands, songs=songs, k=int(o["k"]), shrinkage=shrink)
        fad = np.array(view.map(fn, ((view.embeddings(sha), str(t)) for sha, t in zip(train.sha1, train.track_id))))
        loo = np.array(view.map(fn, zip(refs, ref_rows.track_id.astype(str))))
        return fad, loo

    def song_scores(self, stems: pd.DataFrame) -> pd.Series:
        if self.options["calibration"] == "median":
            # FADs of different labels live on different scales: divide by each label's median before averaging
            scale = stems.groupby("label").score.transform(lambda s: s.abs().median() or 1.0)
            return (stems.score / scale).groupby(stems.track_id).mean()
        g = stems.groupby("track_id").score
        return g.min() if self.options["song"] == "min" else g.mean()
