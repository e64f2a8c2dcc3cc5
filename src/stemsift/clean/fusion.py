"""Score fusion: `blind` (blind cleaners only) and `hybrid` (one blind + one specialist, Blind'25 future work 2).

Each component's scores are put on one scale first: per-label robust z for stem scores, robust z over songs for
song scores (median / 1.4826 MAD, low = suspicious); a component whose scores are probabilities (``probability``,
e.g. `degrade`'s P(unprocessed)) is read as log-odds first, since a probability squeezes its confident alarms
against 0 while the MAD of its near-1 clean bulk is tiny. Then
    rank_mean: the mean of the components' percentile ranks (Borda count; robust to scale, averages evidence)
    max_z:     the lowest component z (the most alarmed component decides; different cleaners see different
               defects, so one alarm is enough)
The song score (option `song`):
    worst:      the song's lowest fused stem score (default: one alarmed stem is not diluted by the song's mean)
    mean:       the mean of the song's fused stem scores
    components: the fusion of the components' own song scores (each component's song rule first)
The components are scored by the score stage before the fusion cleaner (listed or not in score.cleaners).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from stemsift.clean.base import REGISTRY, Cleaner, CleanerError, StemView, register, robust_z

FUSIONS = ("rank_mean", "max_z")
SONGS = ("worst", "mean", "components")


def log_odds(p: pd.Series, eps: float = 1e-4) -> pd.Series:
    """logit(p), p clipped to [eps, 1 - eps] (a stem scored exactly 0 or 1 stays finite)."""
    p = p.astype(float).clip(eps, 1 - eps)
    return np.log(p / (1 - p))


def fuse(columns: pd.DataFrame, how: str) -> pd.Series:
    """One fused score per row from component columns (higher = keep)."""
    if how == "max_z":
        return columns.apply(robust_z).min(axis=1)
    if how == "rank_mean":
        return columns.rank(pct=True).mean(axis=1)
    raise CleanerError(f"fusion: {how!r} is not one of {', '.join(FUSIONS)}")


class FusionCleaner(Cleaner):
    """Fuses the stem and song scores other cleaners already produced (``view.scores``)."""

    defaults = {"components": [], "fusion": "max_z", "song": "worst"}

    def components(self) -> list[str]:
        comps = list(self.options["components"] or [])
        if len(comps) < 2 or len(set(comps)) != len(comps) or self.name in comps:
            raise CleanerError(f"{self.name}.components: need two or more distinct other cleaners, got {comps}")
        if self.options["fusion"] not in FUSIONS:
            raise CleanerError(f"{self.name}.fusion: {self.options['fusion']!r} is not one of {', '.join(FUSIONS)}")
        if self.options["song"] not in SONGS:
            raise CleanerError(f"{self.name}.song: {self.options['song']!r} is not one of {', '.join(SONGS)}")
        return comps

    def _tables(self, view: StemView) -> list[pd.DataFrame]:
        missing = [c for c in self.components() if c not in view.scores]
        if missing:
            raise CleanerError(f"{self.name}.components: {missing[0]!r} has not been scored")
        return [view.scores[c].set_index(["track_id", "label"]) for c in self.components()]

    def score_stems(self, view: StemView) -> np.ndarray:
        tables = self._tables(view)
        keys = pd.MultiIndex.from_frame(view.train[["track_id", "label"]])
        stems = pd.DataFrame({c: t.score.reindex(keys).to_numpy() for c, t in zip(self.components(), tables)},
                             index=keys)
        for c in stems.columns:
            if getattr(REGISTRY.get(c), "probability", False):
                stems[c] = log_odds(stems[c])
        if stems.isna().any().any():
            raise CleanerError(f"{self.name}: a component did not score every training stem")
        labels = keys.get_level_values("label")
        fused = pd.concat([fuse(part, self.options["fusion"]) for _, part in stems.groupby(labels)])
        self._songs = pd.DataFrame({c: t.groupby(level="track_id").song_score.first()
                                    for c, t in zip(self.components(), tables)})
        for c in self._songs.columns:
            if getattr(REGISTRY.get(c), "probability", False) and self._songs[c].between(0, 1).all():
                self._songs[c] = log_odds(self._songs[c])
        return fused.reindex(keys).to_numpy()

    def song_scores(self, stems: pd.DataFrame) -> pd.Series:
        how = self.options["song"]
        if how == "components":
            return fuse(self._songs, self.options["fusion"]).reindex(stems.track_id.unique())
        by_song = stems.groupby("track_id", sort=False).score
        return by_song.min() if how == "worst" else by_song.mean()


@register
class BlindCleaner(FusionCleaner):
    name = "blind"
    defaults = {"components": ["fad", "leak", "degrade"], "fusion": "max_z", "song": "worst"}


@register
class HybridCleaner(FusionCleaner):
    name = "hybrid"
    defaults = {"components": ["blind", "mlp"], "fusion": "max_z", "song": "worst"}
