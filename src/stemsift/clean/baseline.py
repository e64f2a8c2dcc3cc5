"""What the cleaners that read the baseline separator share: its folder, and songs read from the view at its rate."""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from stemsift import LABELS
from stemsift.audio import match_channels, resample
from stemsift.clean.base import CleanerError, StemView


class ViewSongs(Mapping):
    """track_id -> label -> audio at the model's rate and channel count, read from the view on demand."""

    def __init__(self, view: StemView, rows: pd.DataFrame, sample_rate: int, channels: int):
        self.view, self.sr, self.channels = view, sample_rate, channels
        self.ids = list(dict.fromkeys(rows.track_id))

    def __getitem__(self, tid: str) -> dict[str, np.ndarray]:
        return {lb: resample(match_channels(self.view.load_audio(tid, lb), self.channels), self.view.sample_rate, self.sr)
                for lb in LABELS}

    def __iter__(self):
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self.ids)


BASELINE = "baseline"  # the train stage's run folder <train.out>/baseline/seed<k>: trained on the uncleaned set


def only_baseline(model: str | Path, key: str) -> None:
    """A cleaner may read the separator trained on the uncleaned set only: ``model`` must be the train stage's
    ``baseline`` run folder (or one seed<k> in it). models/oracle was trained on the truth, models/cleaned on a
    cleaner's own choice: either would be a side door, so any other folder fails."""
    p = Path(model).resolve()  # a symlink named baseline that points at models/oracle is still oracle
    run = p.parent if re.fullmatch(r"seed\d+", p.name) else p
    if run.name != BASELINE:
        raise CleanerError(f"cleaners.{key}: {model} is not the baseline's models (a folder named {BASELINE!r}, e.g. "
                           f"models/{BASELINE}): cleaners may read only the separator trained on the uncleaned set")


def baseline_folder(model: str | Path, model_seed: int | None, key: str = "unlearning.model") -> Path:
    """``model`` itself when it holds separator.json, else its seed<k>/ (the lowest k unless model_seed).
    Only the baseline's models (see :func:`only_baseline`)."""
    only_baseline(model, key)
    root = Path(model)
    if (root / "separator.json").is_file() and model_seed is None:
        return root
    if model_seed is not None:
        folder = root / f"seed{int(model_seed)}"
    else:
        seeds = sorted((int(m.group(1)), p) for p in root.glob("seed*")
                       if (m := re.fullmatch(r"seed(\d+)", p.name)) and (p / "separator.json").is_file())
        folder = seeds[0][1] if seeds else root / "seed<k>"
    if not (folder / "separator.json").is_file():
        raise CleanerError(f"{key}: {folder}/separator.json not found (train the baseline first)")
    return folder
