"""Score separated test songs the way the seed papers do: museval BSSEval v4 on all four targets at once.

Two SDR flavours per (track, target):

* ``sdr`` -- SiSEC 2018 / museval: BSSEval v4 (time-invariant 512-tap distortion filters) over 1 s frames
  (window = hop), the per-track value is the median over frames ignoring NaN frames, and the per-target
  value of a model is the median over tracks. museval is always called with the four references and the
  four estimates stacked in ``LABELS`` order: the filters project each estimate on *all* references, so
  e.g. the vocals SDR depends on the other estimates (sigsep-mus-eval issue 65).
* ``sdr_utt`` -- MDX challenge: one "utterance" SDR over the whole track and all channels,
  ``10 log10((||s||^2 + eps) / (||s - s_hat||^2 + eps))``, averaged over tracks.

Silence follows museval's framewise rule exactly: a frame in which *any* reference or *any* estimate is
silent (museval's test: the channel sum is zero at every sample) is NaN for all four targets. museval refuses
(ValueError) a whole-track silent reference or estimate; here such a track gets the result museval's rule
implies -- every frame NaN for every target -- without calling museval, so its per-track ``sdr`` is NaN with
``frames == 0`` while ``sdr_utt`` stays finite (an all-zero estimate scores exactly 0 dB utterance SDR).

Parallel scoring (``workers > 1``) uses processes started with **spawn**; see ``START_METHOD``.
"""
from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from pathlib import Path

import numpy as np
import pandas as pd

from stemsift import LABELS

EVAL_DIR = Path("metrics/eval")  # evaluate writes <set>.json / <set>.csv here; report reads them

COLUMNS: tuple[str, ...] = ("track_id", "target", "sdr", "sdr_utt", "frames")

# Process start method for ``score_tracks(workers > 1)``. Measured with bench/bench_evaluate.py (2 shared cores,
# 16 kHz 20 s stereo, torch imported and its intra-op pool used in the parent first): 'fork' and 'spawn' both give
# scores bitwise equal to the serial ones and neither hung. 'spawn' is used because the evaluate stage runs right
# after torch inference in the same process: forking a process with live OpenMP/torch threads is undefined
# territory (locks held by threads that do not exist in the child; Python >= 3.12 warns about it and 3.14 dropped
# fork as the Linux default), while a spawned child starts clean. Its price is the child's `import museval`
# (~1-3.5 s: musdb, pandas, scipy.signal), paid once per worker, in parallel, per call: ~1-2 s per call in the
# bench, against ~10 s of museval per stereo track.
#
# Bitwise equality with the serial path holds because a child runs the same code on the same float64 arrays with
# the same BLAS thread count: every museval call runs under threadpool_limits(BLAS_THREADS), in the parent
# (serial) and in each child alike. museval's LU solves would otherwise use every BLAS thread, so N workers on
# few cores oversubscribe (measured: 1 thread x 2 workers = 1.78x serial; 2 threads x 2 workers ~ 1x).
START_METHOD = "spawn"
BLAS_THREADS = 1


# ----------------------------------------------------------------------------- inputs
def _as_frames(x, name: str) -> np.ndarray:
    """Float64 (frames, channels) copy of one stem; 1-D input is one channel."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name}: expected (frames, channels), got shape {a.shape}")
    return a


def _fit_length(est: np.ndarray, n: int) -> np.ndarray:
    """museval.pad_or_truncate on one estimate: zero-pad the end or cut to the reference length ``n``."""
    if est.shape[0] > n:
        return est[:n]
    if est.shape[0] < n:
        return np.pad(est, [(0, n - est.shape[0]), (0, 0)])
    return est


def _stack(references: Mapping[str, np.ndarray], estimates: Mapping[str, np.ndarray]
           ) -> tuple[np.ndarray, np.ndarray]:
    """(4, frames, channels) float64 references and estimates in LABELS order, estimates fitted to the references."""
    missing = [f"references[{lb!r}]" for lb in LABELS if lb not in references]
    missing += [f"estimates[{lb!r}]" for lb in LABELS if lb not in estimates]
    if missing:
        raise KeyError(f"missing targets: {', '.join(missing)} (all of {LABELS} are scored together)")
    refs = [_as_frames(references[lb], f"references[{lb!r}]") for lb in LABELS]
    shapes = {r.shape for r in refs}
    if len(shapes) != 1:
        raise ValueError(f"references differ in shape: {dict(zip(LABELS, (r.shape for r in refs)))}")
    n, ch = refs[0].shape
    ests = []
    for lb in LABELS:
        e = _as_frames(estimates[lb], f"estimates[{lb!r}]")
        if e.shape[1] != ch:
            raise ValueError(f"estimates[{lb!r}] has {e.shape[1]} channels, the references {ch}")
        ests.append(_fit_length(e, n))
    return np.stack(refs), np.stack(ests)


def _silent(sources: np.ndarray) -> np.ndarray:
    """Per source: museval's silence test (channel sum zero at every sample), shape (nsrc,)."""
    return np.all(np.sum(sources, axis=2) == 0, axis=1)


# ----------------------------------------------------------------------------- metrics
def bsseval_track(references: dict[str, np.ndarray], estimates: dict[str, np.ndarray], sample_rate: int,
                  win_s: float = 1.0) -> dict[str, np.ndarray]:
    """museval.evaluate (mode v4, win = hop = round(win_s*sample_rate)) on the 4 targets stacked in LABELS order;
    arrays (frames, channels). Returns per-target framewise SDR arrays (NaN frames kept as NaN).

    Estimates longer/shorter than the references are cut/zero-padded (museval's pad_or_truncate). A whole-track
    silent reference or estimate (which museval rejects) gives all-NaN frames for every target, which is what
    museval's own framewise silence rule yields."""
    refs, ests = _stack(references, estimates)
    return _bsseval_stacked(refs, ests, sample_rate, win_s)


def _bsseval_stacked(refs: np.ndarray, ests: np.ndarray, sample_rate: int, win_s: float = 1.0
                     ) -> dict[str, np.ndarray]:
    import museval  # ~3.5 s to import (musdb, pandas, scipy.signal): only where scores are computed
    from museval.metrics import Framing

    win = int(round(win_s * sample_rate))
    if win < 1:
        raise ValueError(f"window of {win_s} s at {sample_rate} Hz is empty")
    if _silent(refs).any() or _silent(ests).any():
        nwin = Framing(win, win, refs.shape[1]).nwin
        return {lb: np.full(nwin, np.nan) for lb in LABELS}
    sdr, _isr, _sir, _sar = museval.evaluate(refs, ests, win=win, hop=win, mode="v4", padding=True)
    return {lb: np.asarray(sdr[i], dtype=np.float64) for i, lb in enumerate(LABELS)}


def utterance_sdr(reference: np.ndarray, estimate: np.ndarray, eps: float = 1e-8) -> float:
    """MDX-challenge style SDR over the whole track: 10 log10((||s||^2 + eps) / (||s - ŝ||^2 + eps)), all channels
    together. The estimate is cut/zero-padded to the reference length first (museval's semantics)."""
    s = _as_frames(reference, "reference")
    e = _as_frames(estimate, "estimate")
    if e.shape[1] != s.shape[1]:
        raise ValueError(f"estimate has {e.shape[1]} channels, the reference {s.shape[1]}")
    e = _fit_length(e, s.shape[0])
    num = float(np.sum(s * s)) + eps
    den = float(np.sum((s - e) ** 2)) + eps
    return float(10.0 * np.log10(num / den))


def _frame_median(frames: np.ndarray) -> tuple[float, int]:
    """(NaN-ignoring median, number of non-NaN frames); NaN and 0 if no frame was scored (no warning)."""
    ok = ~np.isnan(frames)
    n = int(ok.sum())
    return (float(np.median(frames[ok])) if n else float("nan")), n


def score_track(track_id: str, references: dict, estimates: dict, sample_rate: int) -> list[dict]:
    """One row per target: {track_id, target, sdr (median over 1 s frames, NaN-ignoring, museval/SiSEC convention),
    sdr_utt (utterance SDR), frames (number of non-NaN frames)}."""
    refs, ests = _stack(references, estimates)
    return _score_stacked(str(track_id), refs, ests, sample_rate)


def _score_stacked(track_id: str, refs: np.ndarray, ests: np.ndarray, sample_rate: int) -> list[dict]:
    """score_track on (4, frames, channels) float64 arrays from ``_stack`` (what worker processes receive)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
        framewise = _bsseval_stacked(refs, ests, sample_rate)
    rows = []
    for i, lb in enumerate(LABELS):
        sdr, n = _frame_median(framewise[lb])
        rows.append({"track_id": track_id, "target": lb, "sdr": sdr,
                     "sdr_utt": utterance_sdr(refs[i], ests[i]), "frames": n})
    return rows


def _score_job(job: tuple[str, np.ndarray, np.ndarray, int]) -> list[dict]:
    return _score_stacked(*job)


def _frame(rows: list[dict]) -> pd.DataFrame:
    order = {lb: i for i, lb in enumerate(LABELS)}
    rows = sorted(rows, key=lambda r: (r["track_id"], order[r["target"]]))
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    return df.astype({"track_id": str, "target": str, "sdr": "float64", "sdr_utt": "float64", "frames": "int64"})


def museval_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of museval workers to hand to several score_tracks calls: each spawn costs an `import museval`."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context(START_METHOD))


def score_tracks(items: Iterable[tuple[str, dict, dict]], sample_rate: int, workers: int = 1,
                 pool: ProcessPoolExecutor | None = None) -> pd.DataFrame:
    """Score many tracks; rows sorted by track_id then LABELS order, identical for any ``workers``.

    ``items`` yields (track_id, references, estimates) and may be a lazy generator: with workers > 1 at most
    2 * workers tracks are in flight, so memory stays bounded. Workers are processes started with
    ``START_METHOD`` ('spawn': safe after torch inference in the parent; see its comment); ``pool`` (from
    museval_pool) reuses one set of them across calls."""
    rows: list[dict] = []
    seen: set[str] = set()

    def check(tid) -> str:
        tid = str(tid)
        if tid in seen:
            raise ValueError(f"track {tid!r} given twice")
        seen.add(tid)
        return tid

    if workers <= 1 and pool is None:
        for tid, refs, ests in items:
            rows.extend(_score_stacked(check(tid), *_stack(refs, ests), sample_rate))
        return _frame(rows)

    own = pool is None
    pool = museval_pool(workers) if own else pool
    try:
        pending = set()
        for tid, refs, ests in items:
            if len(pending) >= 2 * max(workers, 1):
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    rows.extend(f.result())
            # stacked float64 numpy in the parent: children never unpickle torch tensors or re-validate
            pending.add(pool.submit(_score_job, (check(tid), *_stack(refs, ests), sample_rate)))
        for f in pending:
            rows.extend(f.result())
    finally:
        if own:
            pool.shutdown()
    return _frame(rows)


# ----------------------------------------------------------------------------- aggregation
def _nan_stat(values: np.ndarray, fn) -> float:
    """fn over the non-NaN values; NaN (and no RuntimeWarning) when there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(fn(v)) if v.size else float("nan")


def summarize(per_track: pd.DataFrame) -> dict:
    """Papers' aggregation of ``score_tracks`` rows into flat metrics (``dvc exp show`` columns):

    * ``sdr_<target>``: median over tracks of the per-track frame-median SDR (SiSEC), NaN tracks ignored;
    * ``sdr_avg``: mean of the four target medians (NaN if any target has no scored track);
    * ``sdr_utt_<target>``: mean over tracks of the utterance SDR (MDX), NaN tracks ignored; ``sdr_utt_avg``
      the mean of those four;
    * ``tracks``: number of distinct tracks in ``per_track``.

    Floats are plain Python floats rounded to 3 decimals (NaN stays NaN)."""
    out: dict = {}
    med, utt = {}, {}
    for lb in LABELS:
        sel = per_track[per_track["target"] == lb]
        med[lb] = _nan_stat(sel["sdr"].to_numpy(), np.median)
        utt[lb] = _nan_stat(sel["sdr_utt"].to_numpy(), np.mean)
    for lb in LABELS:
        out[f"sdr_{lb}"] = round(med[lb], 3)
    out["sdr_avg"] = round(float(np.mean([med[lb] for lb in LABELS])), 3)
    for lb in LABELS:
        out[f"sdr_utt_{lb}"] = round(utt[lb], 3)
    out["sdr_utt_avg"] = round(float(np.mean([utt[lb] for lb in LABELS])), 3)
    out["tracks"] = int(per_track["track_id"].nunique()) if len(per_track) else 0
    return out
