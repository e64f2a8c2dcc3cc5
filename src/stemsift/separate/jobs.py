"""The trainings of one training set, one per seed, as parallel worker processes (spawn), each with a fixed number
of torch threads. On 2 cores two 1-thread trainings run ~1.35x the throughput of one 2-thread training
(bench/bench_train.py: the small model's LSTM steps are too small to keep two threads busy); on one GPU several
trainings share the device. The thread count can change a result (float reduction order), the worker count never:
a training runs the same way in the stage's process as in a worker."""
from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

import pandas as pd
import torch

from stemsift import LABELS
from stemsift.classify import model as clsmodel
from stemsift.classify.model import probability_fn
from stemsift.separate import model as sepmodel
from stemsift.separate.data import StemPool, fixed_segments
from stemsift.separate.mixit import MixITConfig
from stemsift.separate.mixit_model import save_mixit
from stemsift.separate.mixit_train import train_mixit
from stemsift.separate.train import TrainConfig, train_separator
from stemsift.stemset import StemSet


@dataclass(frozen=True)
class SeedJob:
    """One training: the stem set and the selection it draws from, the model and loop settings, where it goes."""
    root: str
    selection: pd.DataFrame          # typed selection (keep, track_id, label, ...)
    tracks: list[str]                # songs loaded into the pool
    cfg: sepmodel.ModelConfig
    tc: TrainConfig
    seed: int
    device: str
    folder: str
    valid_segments: int = 2
    method: str = "supervised"       # supervised | mixit
    mixit: MixITConfig | None = None
    psi: str | None = None           # MixIT's frozen classifier folder (semantic loss)


def fit(job: SeedJob, threads: int | None = None) -> str:
    """Train one seed and save it to job.folder (a fresh folder); threads: torch intra-op threads meanwhile."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        ss, device = StemSet(job.root), torch.device(job.device)
        seq_len = int(round(job.tc.seq_dur * job.cfg.sample_rate))
        pool = StemPool(ss, job.tracks, job.cfg.sample_rate, job.cfg.nb_channels)
        valid = fixed_segments(ss, ss.track_ids("reference"), job.cfg.sample_rate, seq_len, job.valid_segments,
                               job.cfg.nb_channels)
        if job.method == "mixit":  # song mixtures only: the stems and their labels are never used
            # one network for all targets: as many gradient steps as the four supervised models together
            mtc = replace(job.tc, steps_per_epoch=job.tc.steps_per_epoch * len(LABELS))
            clf = probability_fn(clsmodel.load(job.psi, str(device)), job.cfg.sample_rate) if job.psi else None
            res = train_mixit(pool, job.tracks, valid[LABELS[0]][0], job.cfg, mtc, job.mixit, job.seed, device,
                              classifier=clf)
            save_mixit(res.model, job.cfg, job.mixit.num_outputs, job.folder, {
                "seed": job.seed, "best_epoch": {"mixit": res.best_epoch}, "best_valid": {"mixit": res.best_valid},
                "history": res.history, "steps": res.steps, "seconds": round(res.seconds, 2), "threads": threads})
        else:
            res = train_separator(pool, job.selection, valid, job.cfg, job.tc, job.seed, device)
            sepmodel.save(res.models, job.cfg, job.folder, {
                "seed": job.seed, "best_epoch": res.best_epoch, "best_valid": res.best_valid,
                "history": res.history, "steps": res.steps, "seconds": round(res.seconds, 2), "threads": threads})
        return job.folder
    finally:
        torch.set_num_threads(before)


def fit_all(jobs: list[SeedJob], workers: int = 1, threads: int | None = None) -> list[str]:
    """Run the jobs, `workers` at a time in spawned processes (1: in this process, one after the other)."""
    if workers <= 1 or len(jobs) <= 1:
        return [fit(j, threads) for j in jobs]
    # spawn: the stage process already ran torch (live OpenMP threads); see separate/evaluate.py START_METHOD
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=mp.get_context("spawn")) as ex:
        return list(ex.map(fit, jobs, [threads] * len(jobs)))
