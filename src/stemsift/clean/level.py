"""`level`: a loudness-only control. It scores each stem by how unusual its level is for its label, and knows
nothing else about the audio.

Per stem: its active RMS and its peak, plus its song's mixture active RMS and mixture peak, all in dB. For each
of the four features, a robust z within the label (stemsift.clean.base.robust_z). Stem score = -max |z|: a stem
that is too loud or too quiet is suspicious (``sign: high`` or ``low`` counts one side only). Song = mean.
On a simulator that gives nothing away but the defect itself, this control's detection AUC is near chance
(0.5). Well above that, defective songs are louder or quieter than clean ones, and every level-sensitive
cleaner is reading that instead of the defect.
"""
from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd

from stemsift.audio import active_rms
from stemsift.clean.base import Cleaner, CleanerError, StemView, register, robust_z

FEATURES = ("stem_rms_db", "stem_peak_db", "mix_rms_db", "mix_peak_db")
SIGNS = ("both", "high", "low")


def _db(amplitude: float) -> float:
    return 20 * np.log10(amplitude) if amplitude > 0 else np.nan  # a silent stem has no level to compare


def song_levels(stems: dict[str, np.ndarray], sample_rate: int) -> dict[str, tuple[float, ...]]:
    """label -> (stem active RMS, stem peak, mixture active RMS, mixture peak) in dB; NaN where silent.
    The mixture is the sum of the stems (what the stem-set writer stores as mixture)."""
    audio = {lb: np.asarray(x, dtype=np.float64) for lb, x in stems.items()}
    mix = np.sum(list(audio.values()), axis=0)
    mix_rms, mix_peak = _db(active_rms(mix, sample_rate)), _db(float(np.max(np.abs(mix), initial=0.0)))
    return {lb: (_db(active_rms(x, sample_rate)), _db(float(np.max(np.abs(x), initial=0.0))), mix_rms, mix_peak)
            for lb, x in audio.items()}


def level_table(view: StemView) -> pd.DataFrame:
    """One row per training stem (view.train order): track_id, label and the four level features in dB."""
    songs = [(tid, list(rows.label)) for tid, rows in view.train.groupby("track_id", sort=False)]
    audio = ({lb: view.load_audio(tid, lb) for lb in labels} for tid, labels in songs)  # read as tasks are sent
    per_song = view.map(partial(song_levels, sample_rate=int(view.sample_rate)), audio)
    feats = {(tid, lb): v for (tid, _), levels in zip(songs, per_song) for lb, v in levels.items()}
    table = view.train[["track_id", "label"]].copy()
    values = np.array([feats[(t, lb)] for t, lb in zip(table.track_id, table.label)], dtype=np.float64)
    for i, name in enumerate(FEATURES):
        table[name] = values[:, i] if len(values) else np.array([], dtype=np.float64)
    return table


@register
class LevelCleaner(Cleaner):
    name = "level"
    needs = ("audio",)
    defaults = {"sign": "both"}

    def score_stems(self, view: StemView) -> np.ndarray:
        sign = self.options["sign"]
        if sign not in SIGNS:
            raise CleanerError(f"level.sign: unknown sign {sign!r} (use {', '.join(SIGNS)})")
        table = level_table(view)
        z = pd.DataFrame({f: table.groupby("label")[f].transform(robust_z) for f in FEATURES})
        alarm = {"both": z.abs(), "high": z, "low": -z}[sign]  # how far each feature is to the suspicious side
        worst = alarm.max(axis=1, skipna=True)  # NaN only where every feature is (a silent stem of a silent song)
        return (-worst).fillna(0.0).to_numpy(dtype=np.float64)
