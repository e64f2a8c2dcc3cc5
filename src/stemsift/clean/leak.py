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
"""
from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
from scipy.signal import stft

from stemsift.clean.base import Cleaner, CleanerError, StemView, register

FLOOR = 1e-6  # below any coherence 20 s of frames can measure

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


def song_leak(stems: dict[str, np.ndarray], n_fft: int = 2048, hop: int = 512, floor_db: float = -60.0) -> dict[str, float]:
    """label -> the largest mean coherence of that stem with any other stem of the song (0 for a lone stem)."""
    if len(stems) < 2:
        return {lb: 0.0 for lb in stems}
    pairs = pair_coherence(stem_spectra(stems, n_fft, hop), floor_db)
    both = pd.concat([pairs.rename(columns={"a": "stem"}), pairs.rename(columns={"b": "stem"})])
    best = both.groupby("stem").msc.max()
    return {lb: float(best.get(lb, 0.0)) for lb in stems}


@register
class LeakCleaner(Cleaner):
    name = "leak"
    needs = ("audio",)
    defaults = {"n_fft": 2048, "hop": 512, "floor_db": -60.0}

    def score_stems(self, view: StemView) -> np.ndarray:
        o = self.options
        if int(o["n_fft"]) < 16 or not 0 < int(o["hop"]) <= int(o["n_fft"]):
            raise CleanerError(f"leak.n_fft / leak.hop: need n_fft >= 16 and 0 < hop <= n_fft (got {o['n_fft']}, {o['hop']})")
        songs = [(tid, list(rows.label)) for tid, rows in view.train.groupby("track_id", sort=False)]
        audio = ({lb: view.load_audio(tid, lb) for lb in labels} for tid, labels in songs)  # read as tasks are sent
        per_song = view.map(partial(song_leak, n_fft=int(o["n_fft"]), hop=int(o["hop"]), floor_db=float(o["floor_db"])),
                            audio)
        scores = {(tid, lb): -np.log10(msc + FLOOR) for (tid, _), leaks in zip(songs, per_song) for lb, msc in leaks.items()}
        return np.array([scores[(t, lb)] for t, lb in zip(view.train.track_id, view.train.label)])

    def song_scores(self, stems: pd.DataFrame) -> pd.Series:
        """The song's most coherent pair decides: one leaking stem spoils the song."""
        return stems.groupby("track_id").score.min()
