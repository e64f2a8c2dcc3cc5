"""`leak`: blind detection of bleeding and merged instruments by the coherence between the stems of one song.

Clean stems are independent sources: across the frames of a song their STFTs have no consistent phase relation,
so the magnitude-squared coherence (MSC) of two stems is ~1/frames at every frequency. A stem that carries an
attenuated, filtered or delayed copy of another stem (bleeding, a merged instrument) is a linear function of it
in part, so their MSC rises to the leak-to-signal ratio at each frequency, and near 1 where the leak dominates
(Welch-style coherence, Carter 1987; a delay shorter than the window keeps most of it). No labels, no reference.

    MSC_ab(f) = |sum_t A(f,t) B*(f,t)|^2 / (sum_t |A(f,t)|^2 sum_t |B(f,t)|^2)
    stem score(a) = -log10 max_b mean_f MSC_ab(f)      (frequencies where both stems are active)
    song score    = min over the song's stems          (its most coherent pair)
The log puts the clean songs' chance coherence (~1/frames) on a bell-shaped scale, so a mixture model on the
song scores (filter.ratio: auto) sees one clean population rather than a long tail.

The independence premise fails for music whose parts move together (chorales, shared rhythm and harmony): clean
stems are then coherent too. `calibration: reference` measures what clean songs of *this* collection
show instead: per label pair, the median and robust spread (1.4826 MAD) of log10 MSC over the clean reference
songs (pooled over all pairs where a pair has fewer than `min_songs` songs), and scores a training stem by its
worst partner's robust z against that pair's clean distribution:
    z_ab          = (log10 MSC_ab - median_ab) / spread_ab
    stem score(a) = -max_b z_ab      (sided: one; only more coherent than clean alarms)
                  = -max_b |z_ab|    (sided: two; effects that decorrelate a stem alarm as well)
`calibration: collection` (params.yaml's default, chosen on the worlds: docs/worlds.md) takes each pair's median
and spread over the reference songs *and* the collection's own training songs (mostly clean; the median and MAD
stand a minority of leaking songs): 12 reference songs give a noisy spread per pair, and a spread set too narrow
turns a clean song's ordinary coherence into an alarm (the clean null: each reference song against the others and
the training songs). `calibration: none` keeps the fixed independence assumption above.
"""
from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
from scipy.signal import stft

from stemsift.clean.base import Cleaner, CleanerError, StemView, register

FLOOR = 1e-6  # below any coherence 20 s of frames can measure
MIN_SPREAD = 0.02  # log10 MSC: a spread below ~5 % of coherence is measurement luck, not a tight clean population
CALIBRATIONS = ("reference", "collection", "none")

def stem_spectra(stems: dict[str, np.ndarray], n_fft: int, hop: int) -> dict[str, np.ndarray]:
    """label -> complex STFT (bins, frames) of the stem's channel mean, all cut to the shortest stem."""
    frames = min(len(x) for x in stems.values())
    out = {}
    for lb, x in stems.items():
        mono = np.asarray(x, dtype=np.float64)[:frames]
        mono = mono.mean(axis=1) if mono.ndim == 2 else mono
        if len(mono) < n_fft:
            mono = np.pad(mono, (0, n_fft - len(mono)))
        out[lb] = stft(mono, nperseg=n_fft, noverlap=n_fft - hop, boundary=None, padded=False)[2]
    return out


def pair_coherence(spectra: dict[str, np.ndarray], floor_db: float) -> pd.DataFrame:
    """Mean MSC over the frequencies where both stems are within ``floor_db`` of their own loudest bin,
    for every unordered pair of stems: (a, b, msc). Silent stems have no active bins: msc 0."""
    power = {lb: (np.abs(s) ** 2).sum(axis=1) for lb, s in spectra.items()}
    floor = 10 ** (floor_db / 10)
    rows = []
    labels = list(spectra)
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            active = (power[a] > floor * power[a].max()) & (power[b] > floor * power[b].max())
            if not active.any():
                rows.append((a, b, 0.0))
                continue
            cross = np.abs((spectra[a][active] * np.conj(spectra[b][active])).sum(axis=1)) ** 2
            rows.append((a, b, float(np.mean(cross / (power[a][active] * power[b][active])))))
    return pd.DataFrame(rows, columns=["a", "b", "msc"])


def song_pairs(stems: dict[str, np.ndarray], n_fft: int = 2048, hop: int = 512,
               floor_db: float = -60.0) -> pd.DataFrame:
    """(a, b, msc) for every unordered pair of the song's stems, labels in sorted order (empty for a lone stem)."""
    stems = dict(sorted(stems.items()))
    if len(stems) < 2:
        return pd.DataFrame({"a": [], "b": [], "msc": []})
    return pair_coherence(stem_spectra(stems, n_fft, hop), floor_db)


def song_leak(stems: dict[str, np.ndarray], n_fft: int = 2048, hop: int = 512, floor_db: float = -60.0) -> dict[str, float]:
    """label -> the largest mean coherence of that stem with any other stem of the song (0 for a lone stem)."""
    return best_partner(song_pairs(stems, n_fft, hop, floor_db), list(stems))


def best_partner(pairs: pd.DataFrame, labels: list[str]) -> dict[str, float]:
    """label -> its largest MSC with any partner (0 for a lone stem)."""
    if pairs.empty:
        return {lb: 0.0 for lb in labels}
    both = pd.concat([pairs.rename(columns={"a": "stem"}), pairs.rename(columns={"b": "stem"})])
    best = both.groupby("stem").msc.max()
    return {lb: float(best.get(lb, 0.0)) for lb in labels}


def _spread(x: pd.Series) -> float:
    return float(1.4826 * (x - x.median()).abs().median())


def pair_reference(pairs: pd.DataFrame, min_songs: int) -> tuple[pd.DataFrame, tuple[float, float]]:
    """Clean coherence per label pair from reference songs' (a, b, msc) rows: (center, spread, songs) indexed
    by (a, b) in log10 MSC, and the pooled (center, spread) that pairs with fewer than ``min_songs`` songs use."""
    logs = pairs[pairs.msc > 0].assign(log=lambda d: np.log10(d.msc + FLOOR))  # 0 = no shared active band
    if logs.empty:
        raise CleanerError("leak.calibration: reference songs share no active band between any two stems")
    pooled = (float(logs.log.median()), max(_spread(logs.log), MIN_SPREAD))
    per = logs.groupby(["a", "b"]).log.agg(center="median", spread=_spread, songs="size")
    few = per.songs < min_songs
    per.loc[few, "center"], per.loc[few, "spread"] = pooled
    per["spread"] = per.spread.where(per.spread >= MIN_SPREAD, pooled[1])  # identical songs: no spread to divide by
    return per, pooled


def calibrated_scores(pairs: pd.DataFrame, ref: pd.DataFrame, pooled: tuple[float, float], sided: str,
                      labels: list[str]) -> dict[str, float]:
    """label -> -(worst partner's z) of one training song, its pairs z-scored against the reference pairs."""
    if pairs.empty:
        return {lb: 0.0 for lb in labels}  # a lone stem: nothing to leak into it
    key = pd.MultiIndex.from_frame(pairs[["a", "b"]])
    center = ref.center.reindex(key).fillna(pooled[0]).to_numpy()  # a pair the reference never had: pooled
    spread = ref.spread.reindex(key).fillna(pooled[1]).to_numpy()
    msc = pairs.msc.to_numpy()
    z = np.where(msc > 0, (np.log10(msc + FLOOR) - center) / spread, 0.0)  # no shared active band: no evidence
    alarm = np.abs(z) if sided == "two" else z
    rows = pd.DataFrame({"stem": np.concatenate([pairs.a, pairs.b]), "alarm": np.concatenate([alarm, alarm])})
    worst = rows.groupby("stem").alarm.max()
    return {lb: -float(worst.get(lb, 0.0)) for lb in labels}


def _song_audio(view: StemView, rows: pd.DataFrame):
    """(track_id, labels) and a generator of the songs' audio, read as tasks are sent."""
    songs = [(tid, list(r.label)) for tid, r in rows.groupby("track_id", sort=False)]
    return songs, ({lb: view.load_audio(tid, lb) for lb in labels} for tid, labels in songs)


@register
class LeakCleaner(Cleaner):
    name = "leak"
    needs = ("audio",)
    defaults = {"n_fft": 2048, "hop": 512, "floor_db": -60.0, "calibration": "reference", "sided": "one",
                "min_songs": 5}

    def check(self) -> None:
        o = self.options
        if int(o["n_fft"]) < 16 or not 0 < int(o["hop"]) <= int(o["n_fft"]):
            raise CleanerError(f"leak.n_fft / leak.hop: need n_fft >= 16 and 0 < hop <= n_fft (got {o['n_fft']}, {o['hop']})")
        if o["calibration"] not in CALIBRATIONS:
            raise CleanerError(f"leak.calibration: {o['calibration']!r} is not one of {', '.join(CALIBRATIONS)}")
        if o["sided"] not in ("one", "two"):
            raise CleanerError(f"leak.sided: {o['sided']!r} is not one or two")
        if int(o["min_songs"]) < 1:
            raise CleanerError(f"leak.min_songs: need at least 1 (got {o['min_songs']})")

    def score_stems(self, view: StemView) -> np.ndarray:
        self.check()
        o = self.options
        coherence = partial(song_pairs, n_fft=int(o["n_fft"]), hop=int(o["hop"]), floor_db=float(o["floor_db"]))
        songs, audio = _song_audio(view, view.train)
        per_song = view.map(coherence, audio)
        ref_songs, ref_audio = _song_audio(view, view.reference)
        ref_per_song = view.map(coherence, ref_audio)
        uncalibrated = lambda p, labels: {lb: -np.log10(msc + FLOOR) for lb, msc in best_partner(p, labels).items()}  # noqa: E731
        if o["calibration"] in ("reference", "collection"):
            ref_pairs = [p for p in ref_per_song if not p.empty]
            if not ref_pairs:
                raise CleanerError(f"leak.calibration: {o['calibration']} needs reference songs with two or more stems")
            # collection: the training songs' own pairs join the clean population each pair is measured against
            extra = [p for p in per_song if not p.empty] if o["calibration"] == "collection" else []
            ref, pooled = pair_reference(pd.concat(ref_pairs + extra, ignore_index=True), int(o["min_songs"]))
            leaks = [calibrated_scores(p, ref, pooled, o["sided"], labels) for (_, labels), p in zip(songs, per_song)]
            null = [self._left_out(i, ref_per_song, labels, extra) for i, (_, labels) in enumerate(ref_songs)]
        else:
            leaks = [uncalibrated(p, labels) for (_, labels), p in zip(songs, per_song)]
            null = [uncalibrated(p, labels) for (_, labels), p in zip(ref_songs, ref_per_song)]
        self.null = pd.DataFrame([(tid, lb, v) for (tid, _), s in zip(ref_songs, null) if s is not None
                                  for lb, v in s.items()], columns=["track_id", "label", "score"]) if ref_songs else None
        scores = {(tid, lb): v for (tid, _), s in zip(songs, leaks) for lb, v in s.items()}
        return np.array([scores[(t, lb)] for t, lb in zip(view.train.track_id, view.train.label)])

    def _left_out(self, i: int, ref_per_song: list[pd.DataFrame], labels: list[str],
                  extra: list[pd.DataFrame] = ()) -> dict[str, float] | None:
        """Reference song i scored against the clean coherence of the other reference songs (and ``extra``: the
        training songs' pairs under ``calibration: collection``), out of sample."""
        others = [p for j, p in enumerate(ref_per_song) if j != i and not p.empty] + list(extra)
        if not others or ref_per_song[i].empty:
            return None
        try:
            ref, pooled = pair_reference(pd.concat(others, ignore_index=True), int(self.options["min_songs"]))
        except CleanerError:  # the others share no active band: no null for this song
            return None
        return calibrated_scores(ref_per_song[i], ref, pooled, self.options["sided"], labels)

    def song_scores(self, stems: pd.DataFrame) -> pd.Series:
        """The song's most coherent pair decides: one leaking stem spoils the song."""
        return stems.groupby("track_id").score.min()

