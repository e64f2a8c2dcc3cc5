"""Per-track scores of one trained separator on a stem set's clean test songs (supervised: museval of the Wiener
Separator's estimates; MixIT: see mixit_eval), memoised by everything they depend on."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from stemsift import LABELS, memo
from stemsift.audio import resample
from stemsift.progress import progress
from stemsift.separate import model as sepmodel
from stemsift.separate.evaluate import museval_pool, score_tracks
from stemsift.separate.mixit_eval import score_mixit
from stemsift.separate.train import separate_track
from stemsift.stemset import StemSet


def separate_tracks(ss: StemSet, folder: Path, track_ids: list[str], niter: int, device):
    """Yield (track_id, references, estimates) for the given songs, at the model's sample rate."""
    models, cfg, _ = sepmodel.load(folder, str(device))
    sep = sepmodel.separator(models, cfg, niter=niter).to(device)
    for tid in track_ids:
        refs = {t: resample(x, ss.sample_rate, cfg.sample_rate) for t, x in ss.load_track(tid).items()}
        mix = np.sum([refs[t] for t in LABELS], axis=0)  # the exact sum (the written mixture, resampled)
        yield tid, refs, separate_track(sep, mix, device)


def evaluation_key(folder: Path, niter: int, device, test_sha1: list[str], psi: Path | None, is_mixit: bool,
                   code: str) -> str:
    """The memo key of a per-track table: the model's files, the test stems, the params that change scores and
    `code` (memo.code_key of the stage computing it: its module and every stemsift module it imports)."""
    return memo.key({"model": memo.files_sha1(folder), "niter": niter, "device": str(device), "code": code,
                     "test": test_sha1, **({"psi": memo.files_sha1(psi) if psi else None} if is_mixit else {})})


def score_model(ss: StemSet, folder: Path, niter: int, workers: int, device, code: str,
                psi: Path | None = None, pool=None) -> pd.DataFrame:
    """Per-track scores of one trained separator; memoised (see evaluation_key). pool: museval workers to reuse
    (evaluate.museval_pool), e.g. across the seeds of one training set."""
    models_meta = json.loads((folder / "separator.json").read_text())
    is_mixit = models_meta.get("method") == "mixit"
    test = ss.track_ids("test")
    mkey = evaluation_key(folder, niter, device, ss.stems[ss.stems.track_id.isin(test)].sha1.tolist(), psi, is_mixit,
                          code)
    if (cached := memo.lookup("evaluate", mkey)) is not None:
        return pd.read_parquet(cached / "per_track.parquet")
    if is_mixit:
        df = score_mixit(ss, folder, workers, psi, device)
    else:
        # Separate a chunk with all cores, then museval it with all cores: overlapping them makes torch's idle
        # OpenMP threads spin against the museval workers (measured: several times slower on 2 cores).
        chunk = max(2 * workers, 4)
        own = pool is None and workers > 1
        pool = museval_pool(workers) if own else pool  # one set of workers for every chunk
        try:
            df = pd.concat([score_tracks(list(separate_tracks(ss, folder, test[i:i + chunk], niter, device)),
                                         models_meta["model"]["sample_rate"], workers=workers, pool=pool)
                            for i in progress(range(0, len(test), chunk), desc=f"evaluate {folder.name}",
                                              unit=f"x{chunk} songs")], ignore_index=True)
        finally:
            if own:
                pool.shutdown()
    with tempfile.TemporaryDirectory() as tmp:
        df.to_parquet(Path(tmp) / "per_track.parquet", index=False)
        memo.store("evaluate", mkey, tmp)
    return df
