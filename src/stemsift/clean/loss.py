"""`loss`: the baseline separator's own loss on each training stem, normalised by the stem's energy.

The small-loss criterion of noisy-label learning (Han et al. 2018, co-teaching; Arazo et al. 2019) and the
loss-truncation family of the SDX'23 label-noise track (Fabbro et al. 2024): a network fits the consistent
majority of its data first, so the examples it reconstructs worst are the likeliest to be corrupt. Blind: it
reads the baseline separator and the audio, never a label-trained classifier or the reference split.

    nmse_t(x) = sum (|model_t(STFT mix_x)| - |STFT stem_x,t|)^2 / sum |STFT stem_x,t|^2   (fixed segments)
    stem score = -z_t(log nmse_t(x))     z over the training stems of target t (median / MAD)
    song score = mean over targets (`song: mean`) or the worst target (`song: min`)
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from stemsift.clean.base import Cleaner, CleanerError, StemView, register, robust_z
from stemsift.clean.baseline import ViewSongs, baseline_folder
from stemsift.clean.frames import single_thread
from stemsift.clean.unlearning import song_segments
from stemsift.separate.model import load, resolve_device, spectrogram

EPS = 1e-8


@dataclass(frozen=True)
class Segments:
    segments: int = 6
    seq_dur: float = 3.0


@torch.inference_mode()
def normalised_losses(models: dict, mcfg, songs: ViewSongs, seg: Segments, device: torch.device) -> pd.DataFrame:
    """(track_id, label, nmse) for every song and target model: spectrogram error energy / target energy."""
    spec = spectrogram(mcfg).to(device)
    rows = []
    for tid in songs:
        mix, stems = song_segments(songs[tid], seg, mcfg.sample_rate)
        x = spec(mix.to(device))
        for label, model in models.items():
            y = spec(stems[label].to(device))
            err = (model(x) - y).double().pow(2).sum()
            rows.append((tid, label, float(err / (y.double().pow(2).sum() + EPS))))
    return pd.DataFrame(rows, columns=["track_id", "label", "nmse"])


@register
class LossCleaner(Cleaner):
    name = "loss"
    needs = ("baseline",)
    defaults = {"segments": 6, "seq_dur": 3.0, "song": "mean", "model": "models/baseline", "model_seed": None,
                "device": "auto"}

    seconds: float = 0.0

    def score_stems(self, view: StemView) -> np.ndarray:
        o = self.options
        if o["song"] not in ("mean", "min"):
            raise CleanerError(f"loss.song: {o['song']!r} is not one of mean, min")
        if int(o["segments"]) < 1 or not float(o["seq_dur"]) > 0:
            raise CleanerError("loss.segments / loss.seq_dur: need at least one segment of positive length")
        try:
            device = resolve_device(str(o["device"]))
        except ValueError as e:
            raise CleanerError(f"loss.device: {e}") from None
        models, mcfg, _ = load(baseline_folder(o["model"], o["model_seed"], "loss.model"), device=str(device))
        missing = sorted(set(view.train.label) - set(models))
        if missing:
            raise CleanerError(f"loss.model: the baseline has no {missing[0]!r} model")
        t0 = time.perf_counter()
        songs = ViewSongs(view, view.train, mcfg.sample_rate, mcfg.nb_channels)
        with single_thread():
            table = normalised_losses(models, mcfg, songs, Segments(int(o["segments"]), float(o["seq_dur"])), device)
        self.seconds = time.perf_counter() - t0
        table["z"] = table.groupby("label").nmse.transform(lambda s: robust_z(np.log(s + EPS)))
        z = table.set_index(["track_id", "label"]).z
        return -np.array([z[(t, lb)] for t, lb in zip(view.train.track_id, view.train.label)])

    def song_scores(self, stems: pd.DataFrame) -> pd.Series:
        g = stems.groupby("track_id").score
        return g.min() if self.options["song"] == "min" else g.mean()
