"""Score fusion: `blind` (blind cleaners only) and `hybrid` (one blind + one specialist, Blind'25 future work 2).

Each component's scores are put on one scale first: per-label robust z for stem scores, robust z over songs for
song scores (median / 1.4826 MAD, low = suspicious); a component whose scores are probabilities (``probability``,
e.g. `degrade`'s P(unprocessed)) is read as log-odds first, since a probability squeezes its confident alarms
against 0 while the MAD of its near-1 clean bulk is tiny. Then
    rank_mean: the mean of the components' percentile ranks (Borda count; robust to scale, averages evidence)
    max_z:     the lowest component z (the most alarmed component decides; different cleaners see different
               defects, so one alarm is enough)
    soft_min:  -τ log Σ exp(-z/τ) over the components (`temperature` τ; τ → 0 is max_z): one alarm still decides,
               and a second alarmed component adds to it (against a clean null, below, it is max_z's Šidák)
Option `weights` (max_z and soft_min): `equal`, or `bimodality`: each component's z is multiplied by its Ashman's D
(Ashman, Bird & Zepf 1994) of the two-Gaussian fit to the training songs' worst-stem z of that component, relative
to the largest (a fit whose lighter population weighs < `min_weight` is no second population: weight 0; every
weight 0: equal). A component that sees no defect in this collection has one population, and its tail alarms on
clean songs then count less.
The song score (option `song`):
    worst:      the song's lowest fused stem score (default: one alarmed stem is not diluted by the song's mean)
    mean:       the mean of the song's fused stem scores
    components: the fusion of the components' own song scores (each component's song rule first)
`calibration: reference` reads each component against its own clean null instead (``Cleaner.null``: the reference
stems scored out of sample, e.g. `fad` leave-one-out, `leak` leave-one-song-out, `degrade` K-fold cross-fitting): a
stem's score becomes a smoothed conformal p-value per label (Vovk et al. 2005; split-conformal outlier p-values,
Bates et al. Ann. Stat. 2023): #{null <= s} / (n + 1), interpolated between the null's order statistics and ranked
beyond them by the null's Gaussian tail (`conformal_p`), so a component with no signal in this collection gives
uniform p-values, and a component whose clean scores are heavy-tailed alarms less (its null's spread, not the
training stems', sets the scale). max_z then takes the smallest p with Sidak's correction
for the m components, 1 - (1 - min p)^m (rank_mean: the mean p); worst takes the song's smallest stem p with Sidak's
correction for its stems, mean the mean; and the song statistic is calibrated once more against the same statistic of
the reference songs (each scored against the null without its own song), so song scores are p-values that are
uniform for clean songs: what `filter.auto.method: storey` reads. `calibration: both` takes each component's larger
p of two nulls, its reference null and the training stems of the label (a stem alarms only where it is extreme
against both: a null that the reference split sets too narrow, or a component whose clean scores are heavy-tailed,
then raises no alarm on its own).
With `calibration: training` the reference songs' statistic is built the same way on the training scale (each
component's clean null through the training stems' per-label robust z), and each song's conformal p against it is
the scores' `song_p` column: what `filter.auto.method: storey` reads (absent when a component has no clean null).
The components are scored by the score stage before the fusion cleaner (listed or not in score.cleaners).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import norm

from stemsift.clean.base import REGISTRY, Cleaner, CleanerError, StemView, register, robust_scale, robust_z

FUSIONS = ("rank_mean", "max_z", "soft_min")
WEIGHTS = ("equal", "bimodality")
SONGS = ("worst", "mean", "components")
CALIBRATIONS = ("training", "reference", "both")
MIN_NULL = 5  # a label whose null has fewer stems is read against the null of all labels


def conformal_p(scores, null) -> np.ndarray:
    """Smoothed conformal p-value of each score against a clean null (low = suspicious): the null's empirical CDF,
    linearly interpolated between its order statistics (count / (n + 1) at each), with the null's Gaussian tail
    ranking the scores beyond its range (Phi(z) / Phi(z_min) of the first step below the smallest)."""
    null = np.sort(np.asarray(null, dtype=np.float64))
    s = np.asarray(scores, dtype=np.float64)
    n = len(null)
    sd = null.std(ddof=1) if n > 1 else 0.0
    z = lambda x: (x - null.mean()) / (sd if sd > 0 else 1.0)  # noqa: E731
    count = np.searchsorted(null, s, side="right")
    inner = (count > 0) & (count < n)
    k = np.clip(count, 1, n - 1)
    gap = np.where(inner, null[k] - null[k - 1], 1.0)
    u = np.where(inner, (s - null[k - 1]) / np.where(gap > 0, gap, 1.0), 0.0)
    u = np.where(count == 0, np.exp(norm.logcdf(z(s)) - norm.logcdf(z(null[0]))), u)
    u = np.where(count == n, 1 - np.exp(norm.logsf(z(s)) - norm.logsf(z(null[-1]))), u)
    return (count + np.clip(u, 0, 1)) / (n + 1)


def sidak(p, m) -> np.ndarray:
    """Sidak's correction of the smallest of m p-values: 1 - (1 - p)^m (log1p: exact for tiny p)."""
    return -np.expm1(np.asarray(m, dtype=np.float64) * np.log1p(-np.clip(np.asarray(p, dtype=np.float64), 0, 1 - 1e-16)))


def is_probability(name: str) -> bool:
    """A component whose stem scores are probabilities (fusion reads them as log-odds)."""
    return bool(getattr(REGISTRY.get(name), "probability", False))


def log_odds(p: pd.Series, eps: float = 1e-4) -> pd.Series:
    """logit(p), p clipped to [eps, 1 - eps] (a stem scored exactly 0 or 1 stays finite)."""
    p = p.astype(float).clip(eps, 1 - eps)
    return np.log(p / (1 - p))


def combine(z: pd.DataFrame, how: str, temperature: float = 1.0) -> pd.Series:
    """One score per row from z columns already on one scale: the lowest (max_z) or the soft minimum."""
    if how == "soft_min":
        t = float(temperature)
        low = z.min(axis=1)  # log-sum-exp about the minimum: exact for any spread of z
        return low - t * np.log(np.exp(-(z.sub(low, axis=0)) / t).sum(axis=1))
    return z.min(axis=1)


def fuse(columns: pd.DataFrame, how: str, temperature: float = 1.0) -> pd.Series:
    """One fused score per row from component columns (higher = keep)."""
    if how in ("max_z", "soft_min"):
        return combine(columns.apply(robust_z), how, temperature)
    if how == "rank_mean":
        return columns.rank(pct=True).mean(axis=1)
    raise CleanerError(f"fusion: {how!r} is not one of {', '.join(FUSIONS)}")


def bimodality_weights(song_z: pd.DataFrame, min_weight: float = 0.1, seed: int = 0) -> pd.Series:
    """Each component's Ashman's D of a two-Gaussian fit to its songs' worst-stem z, relative to the largest; a fit
    whose lighter population weighs < min_weight counts 0; all 0: every weight 1."""
    from stemsift.clean.ratio import fit_gmm

    d = {}
    for c in song_z.columns:
        x = song_z[c].to_numpy(dtype=np.float64)
        f = fit_gmm(x, seed) if len(x) >= 4 and np.ptp(x) > 0 else None
        d[c] = f.ashman if f is not None and min(f.weights) >= min_weight else 0.0
    w = pd.Series(d, dtype=float)
    return w / w.max() if w.max() > 0 else w * 0 + 1.0


class FusionCleaner(Cleaner):
    """Fuses the stem and song scores other cleaners already produced (``view.scores``)."""

    defaults = {"components": [], "fusion": "max_z", "song": "worst", "calibration": "training", "weights": "equal",
                "temperature": 1.0, "min_weight": 0.1}

    def components(self) -> list[str]:
        comps = list(self.options["components"] or [])
        if len(comps) < 2 or len(set(comps)) != len(comps) or self.name in comps:
            raise CleanerError(f"{self.name}.components: need two or more distinct other cleaners, got {comps}")
        if self.options["fusion"] not in FUSIONS:
            raise CleanerError(f"{self.name}.fusion: {self.options['fusion']!r} is not one of {', '.join(FUSIONS)}")
        if self.options["song"] not in SONGS:
            raise CleanerError(f"{self.name}.song: {self.options['song']!r} is not one of {', '.join(SONGS)}")
        if self.options["calibration"] not in CALIBRATIONS:
            raise CleanerError(f"{self.name}.calibration: {self.options['calibration']!r} is not one of "
                               f"{', '.join(CALIBRATIONS)}")
        if self.options["weights"] not in WEIGHTS:
            raise CleanerError(f"{self.name}.weights: {self.options['weights']!r} is not one of {', '.join(WEIGHTS)}")
        if self.options["weights"] != "equal" and (self.options["fusion"] == "rank_mean"
                                                    or self.options["calibration"] != "training"):
            raise CleanerError(f"{self.name}.weights: {self.options['weights']} weighs z-scores: it needs fusion max_z "
                               f"or soft_min with calibration: training")
        for key in ("temperature", "min_weight"):
            try:
                float(self.options[key])
            except (TypeError, ValueError):
                raise CleanerError(f"{self.name}.{key}: not a number: {self.options[key]!r}") from None
        if self.options["fusion"] == "soft_min" and not float(self.options["temperature"]) > 0:
            raise CleanerError(f"{self.name}.temperature: must be > 0, got {self.options['temperature']!r}")
        if self.options["calibration"] != "training" and self.options["song"] == "components":
            raise CleanerError(f"{self.name}.song: components fuses the components' own song scores, which have no "
                               f"null; use worst or mean with calibration: reference")
        return comps

    def _tables(self, view: StemView) -> list[pd.DataFrame]:
        missing = [c for c in self.components() if c not in view.scores]
        if missing:
            raise CleanerError(f"{self.name}.components: {missing[0]!r} has not been scored")
        return [view.scores[c].set_index(["track_id", "label"]) for c in self.components()]

    def _stem_columns(self, view: StemView, tables: list[pd.DataFrame], keys: pd.MultiIndex) -> pd.DataFrame:
        stems = pd.DataFrame({c: t.score.reindex(keys).to_numpy() for c, t in zip(self.components(), tables)},
                             index=keys)
        if stems.isna().any().any():
            raise CleanerError(f"{self.name}: a component did not score every training stem")
        for c in stems.columns:
            if is_probability(c):
                stems[c] = log_odds(stems[c])
        return stems

    def score_stems(self, view: StemView) -> np.ndarray:
        tables = self._tables(view)
        keys = pd.MultiIndex.from_frame(view.train[["track_id", "label"]])
        stems = self._stem_columns(view, tables, keys)
        if self.options["calibration"] != "training":
            return self._reference_scores(view, stems)
        labels = keys.get_level_values("label")
        how, temperature = self.options["fusion"], float(self.options["temperature"])
        if how == "rank_mean":
            fused = pd.concat([fuse(part, how) for _, part in stems.groupby(labels)])
            self.weights = pd.Series(1.0, index=stems.columns)
        else:
            z = pd.concat([part.apply(robust_z) for _, part in stems.groupby(labels)]).reindex(stems.index)
            self.weights = (bimodality_weights(z.groupby(level="track_id").min(), float(self.options["min_weight"]),
                                               self.seed)
                            if self.options["weights"] == "bimodality" else pd.Series(1.0, index=stems.columns))
            if self.options["weights"] != "equal":
                print(f"{self.name}: component weights " + ", ".join(f"{c} {w:.2f}" for c, w in self.weights.items()))
            fused = combine(z * self.weights, how, temperature)
        self._songs = pd.DataFrame({c: t.groupby(level="track_id").song_score.first()
                                    for c, t in zip(self.components(), tables)})
        for c in self._songs.columns:
            if is_probability(c) and self._songs[c].between(0, 1).all():
                self._songs[c] = log_odds(self._songs[c])
        self._ref_songs = self._training_song_null(view, stems, labels)
        return fused.reindex(keys).to_numpy()

    def _training_song_null(self, view: StemView, stems: pd.DataFrame, labels) -> pd.Series:
        """The reference songs' song statistic on the training scale (each component's out-of-sample null put
        through the same per-label robust z, or percentile, as the training stems): the clean songs' distribution
        that `song_p` reads. Empty when a component has no null or the song rule is ``components``."""
        if self.options["song"] == "components" or any(view.nulls.get(c) is None for c in stems.columns):
            return pd.Series(dtype=float)
        nulls = {c: view.nulls[c].set_index(["track_id", "label"]).score for c in stems.columns}
        keys = sorted(set.intersection(*[set(n.index) for n in nulls.values()]))
        if not keys:
            return pd.Series(dtype=float)
        rows = pd.MultiIndex.from_tuples(keys, names=["track_id", "label"])
        ref_labels = rows.get_level_values("label")
        cols = {}
        for c in stems.columns:
            null = nulls[c].reindex(rows).astype(float)
            null = log_odds(null) if is_probability(c) else null
            out = np.full(len(rows), np.nan)
            for lb in np.unique(ref_labels):
                train = stems[c][np.asarray(labels) == lb]
                at = np.asarray(ref_labels == lb)
                train = train if len(train) else stems[c]  # a label no training stem has: every label's scale
                if self.options["fusion"] != "rank_mean":
                    centre, scale = robust_scale(train)
                    out[at] = (null.to_numpy()[at] - centre) / scale
                else:  # rank_mean: the null's percentile among the label's training stems
                    out[at] = np.searchsorted(np.sort(train.to_numpy()), null.to_numpy()[at], side="right") / len(train)
            cols[c] = out
        columns = pd.DataFrame(cols, index=rows)
        fused = (columns.mean(axis=1) if self.options["fusion"] == "rank_mean"
                 else combine(columns * self.weights, self.options["fusion"], float(self.options["temperature"])))
        g = fused.groupby(level="track_id")
        return g.min() if self.options["song"] == "worst" else g.mean()

    # ------------------------------------------------------------------ calibration: reference

    def _nulls(self, view: StemView) -> dict[str, pd.DataFrame]:
        """Each component's clean null (log-odds for probabilities); one without (too few reference stems to score
        any out of sample, or a cleaner that keeps none) is read against the training stems, with a warning."""
        out = {}
        for c in self.components():
            null = view.nulls.get(c)
            if null is None or len(null) < 2:
                print(f"{self.name}: warning: calibration {self.options['calibration']}: {c!r} has no clean null "
                      f"(too few reference stems, or it keeps none); its stems are read against the training stems")
                continue
            null = null.copy()
            if is_probability(c):
                null["score"] = log_odds(null.score)
            out[c] = null
        return out

    @staticmethod
    def _p(scores: pd.Series, labels, null: pd.DataFrame, skip_song=None) -> np.ndarray:
        """Per-label conformal p of ``scores`` against ``null`` (without the stems of ``skip_song``)."""
        if skip_song is not None:
            null = null[null.track_id != skip_song]
        out = np.empty(len(scores))
        labels = np.asarray(labels)
        for lb in np.unique(labels):
            own = null.score[null.label == lb]
            ref = own if len(own) >= MIN_NULL else null.score
            rows = labels == lb
            out[rows] = conformal_p(scores.to_numpy()[rows], ref.to_numpy())
        return out

    def _fused(self, p: pd.DataFrame) -> pd.Series:
        """One p per stem from the components' p columns."""
        if self.options["fusion"] != "rank_mean":  # max_z and soft_min alike: Sidak's correction of the smallest p
            return pd.Series(sidak(p.min(axis=1), p.shape[1]), index=p.index)
        return p.mean(axis=1)

    def _song_statistic(self, stem_p: pd.Series) -> pd.Series:
        g = stem_p.groupby(level="track_id", sort=False)
        if self.options["song"] == "worst":
            return pd.Series(sidak(g.min(), g.size()), index=g.min().index)
        return g.mean()

    def _reference_scores(self, view: StemView, stems: pd.DataFrame) -> np.ndarray:
        nulls = self._nulls(view)
        labels = stems.index.get_level_values("label")
        both = self.options["calibration"] == "both"
        train = {c: stems[c].reset_index() for c in stems.columns}  # the training stems as a second null ("both")
        train = {c: t.rename(columns={c: "score"}) for c, t in train.items()}

        def p_of(c, scores, labels, skip_song=None):
            if c not in nulls:
                return self._p(scores, labels, train[c])
            p = self._p(scores, labels, nulls[c], skip_song)
            return np.maximum(p, self._p(scores, labels, train[c])) if both else p

        p = pd.DataFrame({c: p_of(c, stems[c], labels) for c in stems.columns}, index=stems.index)
        fused = self._fused(p)
        # the reference songs' own statistic, each song against the null without it: the song-level null
        # (only when every component has one: a song statistic over fewer components would not be the same statistic)
        ref_keys = sorted(set.intersection(*[set(zip(n.track_id, n.label)) for n in nulls.values()])) \
            if len(nulls) == len(self.components()) else []
        ref_songs = []
        for song in sorted({t for t, _ in ref_keys}):
            rows = pd.MultiIndex.from_tuples([k for k in ref_keys if k[0] == song], names=["track_id", "label"])
            cols = {}
            for c, null in nulls.items():
                own = null.set_index(["track_id", "label"]).score.reindex(rows)
                cols[c] = p_of(c, own, rows.get_level_values("label"), skip_song=song)
            ref_songs.append(self._song_statistic(self._fused(pd.DataFrame(cols, index=rows))))
        self._ref_songs = pd.concat(ref_songs) if ref_songs else pd.Series(dtype=float)
        return fused.reindex(stems.index).to_numpy()

    def song_scores(self, stems: pd.DataFrame) -> pd.Series:
        how = self.options["song"]
        self.columns = {}
        if self.options["calibration"] != "training":
            t = self._song_statistic(stems.set_index(["track_id", "label"]).score)
            null = self._ref_songs.to_numpy()
            if len(null) < 2:
                return t.reindex(stems.track_id.unique())
            # calibrated on the reference songs' statistic (log scale: the tail ranks p-values of every magnitude)
            log = lambda x: np.log(np.clip(np.asarray(x, dtype=np.float64), 1e-300, None))  # noqa: E731
            songs = pd.Series(conformal_p(log(t), log(null)), index=t.index).reindex(stems.track_id.unique())
            self.columns = {"song_p": stems.track_id.map(songs).to_numpy()}
            return songs
        if how == "components":
            return fuse(self._songs, self.options["fusion"], float(self.options["temperature"])).reindex(
                stems.track_id.unique())
        by_song = stems.groupby("track_id", sort=False).score
        songs = by_song.min() if how == "worst" else by_song.mean()
        if len(self._ref_songs) >= 2:  # each song's conformal p against the reference songs' statistic: storey reads it
            p = pd.Series(conformal_p(songs.to_numpy(), self._ref_songs.to_numpy()), index=songs.index)
            self.columns = {"song_p": stems.track_id.map(p).to_numpy()}
        return songs


@register
class BlindCleaner(FusionCleaner):
    name = "blind"
    defaults = {**FusionCleaner.defaults, "components": ["fad", "leak", "degrade"], "fusion": "soft_min"}


@register
class HybridCleaner(FusionCleaner):
    name = "hybrid"
    defaults = {**FusionCleaner.defaults, "components": ["blind", "mlp"]}
