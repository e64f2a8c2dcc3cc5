"""The cleaner registry (fadtk's ModelLoader pattern): one small base class, one module per cleaner.

A cleaner sees a :class:`StemView` of the training and clean reference splits (audio, manifest rows without
track metadata, embeddings) and returns one score per training stem, higher = keep. The defect truth and the
contaminate stage's track metadata never enter the view: its audio comes from an :class:`AudioReader` holding file
paths only, and nothing in it leads back to the StemSet.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable

import numpy as np
import pandas as pd

from stemsift.stemset import StemSet

# The manifest columns a cleaner may read; `tracks.meta` (which names the simulated defect) is not among them.
VIEW_COLUMNS = ["track_id", "split", "label", "path", "sample_rate", "channels", "frames", "sha1", "rms_db", "silent"]


class CleanerError(ValueError):
    """A bad cleaner name or option; one line naming the params key."""


class AudioReader:
    """``reader(track_id, label)`` -> (frames, channels) float audio of one stem the view lists. Holds only the
    stems' file paths: unlike the bound ``StemSet.load`` it leads to no StemSet, track metadata (which names the
    simulated defect) or truth file. A plain object of strings, so it pickles to Ray workers."""

    __slots__ = ("paths",)

    def __init__(self, paths: dict[tuple[str, str], str]):
        self.paths = paths

    @classmethod
    def of(cls, ss: StemSet, stems: pd.DataFrame) -> "AudioReader":
        return cls({(t, lb): str(ss.root / p) for t, lb, p in zip(stems.track_id, stems.label, stems.path)})

    def __call__(self, track_id: str, label: str) -> np.ndarray:
        from stemsift.audio import read_audio

        if (track_id, label) not in self.paths:
            raise KeyError(f"no {label!r} stem for track {track_id!r} in the cleaner's view")
        return read_audio(self.paths[track_id, label])[0]

    def __getstate__(self):
        return self.paths

    def __setstate__(self, paths):
        self.paths = paths


@dataclass
class StemView:
    """Truth-free view of a stem set: training stems to score, clean reference stems to learn from."""

    train: pd.DataFrame
    reference: pd.DataFrame
    load_audio: Callable[[str, str], np.ndarray]
    embeddings: Callable[[str], np.ndarray] | None = None  # stem sha1 -> (frames, dim)
    sample_rate: int = 0
    scores: dict[str, pd.DataFrame] = field(default_factory=dict)  # cleaner -> its table, for fusion cleaners
    nulls: dict[str, pd.DataFrame] = field(default_factory=dict)   # cleaner -> its clean null (set by Cleaner.score)
    executor: Any = None  # stemsift.compute.Executor for per-song / per-stem work; None = this process

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list:
        """fn(item) for every item, in order: here, or as tasks of the `compute` executor (local processes, Ray).
        ``fn`` must be a module-level function (or a functools.partial of one) so it can travel to another process."""
        if self.executor is None or self.executor.in_process:
            return [fn(item) for item in items]
        return self.executor.map(fn, items, gpus=False)

    @classmethod
    def of(cls, ss: StemSet, embeddings: Callable[[str], np.ndarray] | None = None) -> "StemView":
        stems = ss.stems[VIEW_COLUMNS].reset_index(drop=True)
        stems = stems[stems.split.isin(["train", "reference"])].reset_index(drop=True)  # test songs stay unseen
        return cls(train=stems[stems.split == "train"].reset_index(drop=True),
                   reference=stems[stems.split == "reference"].reset_index(drop=True),
                   load_audio=AudioReader.of(ss, stems), embeddings=embeddings, sample_rate=ss.sample_rate)

    def embed(self, rows: pd.DataFrame) -> list[np.ndarray]:
        if self.embeddings is None:
            raise CleanerError("this cleaner needs embeddings (run the embed stage first)")
        return [self.embeddings(s) for s in rows.sha1]


class Cleaner(ABC):
    name: ClassVar[str]
    needs: ClassVar[tuple[str, ...]] = ()       # 'embeddings', 'audio', 'baseline' (what the stage must provide)
    defaults: ClassVar[dict] = {}               # the cleaner's params block, with defaults
    probability: ClassVar[bool] = False         # stem scores are probabilities (fusion reads them as log-odds)
    # After score(): the reference stems scored out of sample (track_id, label, score), the clean null that
    # fusion's `calibration: reference` reads; None for a cleaner that cannot score its own reference honestly.
    null: pd.DataFrame | None = None

    def components(self) -> list[str]:
        """Cleaners whose scores this one reads from ``view.scores`` (fusion cleaners); scored before it."""
        return []

    def __init__(self, options: dict | None = None, seed: int = 0):
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise CleanerError(f"{self.name}.{unknown[0]}: unknown option (known: {', '.join(self.defaults) or 'none'})")
        self.options = {**self.defaults, **options}
        self.seed = int(seed)

    @abstractmethod
    def score_stems(self, view: StemView) -> np.ndarray:
        """One score per row of ``view.train`` (same order); higher = keep."""

    def song_scores(self, stems: pd.DataFrame) -> pd.Series:
        """Per-song score from the stem scores (unified filtering ranks songs by it): the mean."""
        return stems.groupby("track_id").score.mean()

    def score(self, view: StemView) -> pd.DataFrame:
        """(track_id, label, score, song_score) for every training stem."""
        out = view.train[["track_id", "label"]].copy()
        out["score"] = np.asarray(self.score_stems(view), dtype=np.float64)
        if len(out.score) != len(view.train) or not np.isfinite(out.score).all():
            raise CleanerError(f"{self.name}: produced {len(out)} scores, non-finite or wrong count")
        out["song_score"] = out.track_id.map(self.song_scores(out)).astype(np.float64)
        for col, values in getattr(self, "columns", {}).items():  # e.g. class probabilities p_<label>
            out[col] = np.asarray(values, dtype=np.float64)
        if self.null is not None:  # fusion cleaners scored on this view read it
            view.nulls[self.name] = self.null
        return out

    def config(self) -> dict:
        return {"cleaner": self.name, "seed": self.seed, **self.options}


def sample_songs(songs: pd.Series, n: int, seed: int) -> set:
    """At most ``n`` distinct songs, a seeded sample (all of them when there are n or fewer): what a cleaner that
    learns from the collection itself learns from, so its cost stays flat in the number of songs."""
    names = np.unique(songs)
    return set(names if len(names) <= n else np.random.default_rng(seed).choice(names, n, replace=False))


def robust_z(x: pd.Series) -> pd.Series:
    """(x - median) / scale: a z-score a few corrupt stems cannot drag (shared by loss and fusion).

    scale = 1.4826 MAD (consistent with the standard deviation for Gaussian data). When more than half the values
    are equal the MAD is 0: the scale falls back to 1.2533 x the mean absolute deviation from the median
    (sqrt(pi/2): also consistent for Gaussian data, and still > 0 when any value differs), and to 1.0 when every
    value is equal. A one-element group is 0 (its own median). Never NaN for finite input."""
    x = x.astype(float)
    if len(x) == 0:
        return x
    centre, scale = robust_scale(x)
    return (x - centre) / scale


def robust_scale(x: pd.Series) -> tuple[float, float]:
    """robust_z's (median, scale) of ``x``: what puts other scores (a clean null) on the same z scale."""
    x = x.astype(float)
    dev = (x - x.median()).abs()
    scale = 1.4826 * dev.median()
    if not scale > 0:
        scale = 1.2533 * dev.mean()
    if not scale > 0:
        scale = 1.0
    return float(x.median()), float(scale)


REGISTRY: dict[str, type[Cleaner]] = {}


def register(cls: type[Cleaner]) -> type[Cleaner]:
    REGISTRY[cls.name] = cls
    return cls


def get_cleaner(name: str, options: dict | None = None, seed: int = 0) -> Cleaner:
    if name not in REGISTRY:
        raise CleanerError(f"unknown cleaner {name!r} (available: {', '.join(REGISTRY)})")
    return REGISTRY[name](options, seed)
