"""Dataset audit: exact and near-duplicate songs within and across splits (train/test leakage), stems shared
between different songs, mixtures that are not the sum of their stems, silent and clipped stems.

- **Exact duplicates**: a content hash of the decoded 16-bit samples (so a FLAC and a WAV copy match); a song's
  hash is the hash of its four stems. Silent stems are left out of stem-level duplicates (all-zero stems match).
- **Near duplicates**: a fingerprint of the sum of the stems (mono): compressed mel energies in 64 ms windows,
  16 ms hop, each band minus its mean over time and the whole scaled to unit norm (gain drops out). Candidates come
  from a global spectral-shape fingerprint (top `candidates` per song by cosine); each candidate pair is verified
  by the normalised cross-correlation of the fingerprints at the best lag within ±`max_shift_s` (a small shift
  drops out). A pair at or over `near_threshold` that is not an exact duplicate is a near duplicate.
- **Mixtures**: residual energy of mixture − Σ stems relative to the mixture, in dB (16-bit rounding: about −90).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from stemsift import LABELS, MIXTURE
from stemsift.audio import quantize
from stemsift.stemset import SILENCE_DB, StemSet

KINDS = ("duplicate_song", "near_duplicate_song", "duplicate_stem", "bad_mixture", "silent_stem", "clipped_stem")
COLUMNS = {"kind": "string", "track_id": "string", "label": "string", "split": "string", "other_track_id": "string",
           "other_split": "string", "leak": "bool", "value": "float64"}
FULL_SCALE = 32767 / 32768


@dataclass(frozen=True)
class AuditConfig:
    near_threshold: float = 0.9   # fingerprint correlation at the best lag
    max_shift_s: float = 1.0      # lags searched for a near duplicate
    candidates: int = 5           # near-duplicate candidates per song (global fingerprint), then verified
    mixture_tol_db: float = -30.0  # residual of mixture - sum of stems above this: not the sum of its stems
    clip_samples: int = 16        # samples at full scale that make a stem "clipped"


def content_hash(x: np.ndarray) -> str:
    """sha1 of the 16-bit samples (format- and container-independent)."""
    return hashlib.sha1(np.round(quantize(x) * 32768).astype("<i2").tobytes()).hexdigest()


def mel_filters(sr: int, n_fft: int, n_mels: int = 32, fmin: float = 30.0) -> np.ndarray:
    """Triangular mel filterbank (n_mels, n_fft//2+1) on the HTK mel scale."""
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    edges = 700.0 * (10 ** (np.linspace(mel(fmin), mel(sr / 2), n_mels + 2) / 2595.0) - 1.0)
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))


def fingerprint(x: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """(frames x bands fingerprint: band-mean removed, unit norm; global spectral-shape vector, unit norm)."""
    mono = np.asarray(x, dtype=np.float64).mean(axis=1) if x.ndim == 2 else np.asarray(x, dtype=np.float64)
    n_fft = 1 << int(np.ceil(np.log2(0.064 * sr)))
    hop = max(1, int(round(0.016 * sr)))
    if len(mono) < n_fft:
        mono = np.pad(mono, (0, n_fft - len(mono)))
    frames = np.lib.stride_tricks.sliding_window_view(mono, n_fft)[::hop] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    mag = (power @ mel_filters(sr, n_fft).T) ** 0.15  # (power)^0.15: a gain g scales every cell by g^0.3
    shape = mag.mean(axis=0)
    fp = mag - shape
    return fp / (np.linalg.norm(fp) + 1e-12), shape / (np.linalg.norm(shape) + 1e-12)


def lagged_similarity(a: np.ndarray, b: np.ndarray, max_lag: int) -> float:
    """Max over lags |l| <= max_lag of sum_t,b a[t] b[t+l] (unit-norm inputs: 1 for an exact shifted copy)."""
    n = len(a) + len(b)
    size = 1 << int(np.ceil(np.log2(n)))
    cross = np.fft.irfft((np.fft.rfft(a, size, axis=0).conj() * np.fft.rfft(b, size, axis=0)).sum(axis=1), size)
    lags = np.r_[cross[: max_lag + 1], cross[size - max_lag:]] if max_lag > 0 else cross[:1]
    return float(lags.max())


def _rows(kind, tid, label, split, other=None, other_split=None, value=np.nan) -> dict:
    leak = other_split is not None and other_split != split
    return dict(kind=kind, track_id=tid, label=label, split=split, other_track_id=other, other_split=other_split,
                leak=leak, value=float(value))


def audit(ss: StemSet, cfg: AuditConfig = AuditConfig()) -> tuple[pd.DataFrame, dict]:
    """Every finding (one row each; pairs once, train-side first) and the headline numbers."""
    split = dict(zip(ss.tracks.track_id, ss.tracks.split))
    rows: list[dict] = []
    song_hash, stem_hash, fps, shapes = {}, {}, {}, {}
    for tid in ss.track_ids():
        stems = ss.load_track(tid)
        hashes = {lb: content_hash(stems[lb]) for lb in LABELS}
        for lb in LABELS:
            x = stems[lb]
            rms = 10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-20)
            if rms < SILENCE_DB:
                rows.append(_rows("silent_stem", tid, lb, split[tid], value=rms))
            else:
                stem_hash[(tid, lb)] = hashes[lb]
            clipped = int(np.sum(np.abs(x) >= FULL_SCALE))
            if clipped >= cfg.clip_samples:
                rows.append(_rows("clipped_stem", tid, lb, split[tid], value=clipped))
        song_hash[tid] = hashlib.sha1("".join(hashes[lb] for lb in LABELS).encode()).hexdigest()
        total = np.sum([stems[lb].astype(np.float64) for lb in LABELS], axis=0)
        mix = ss.load(tid, MIXTURE).astype(np.float64)
        if mix.shape != total.shape:
            rows.append(_rows("bad_mixture", tid, MIXTURE, split[tid], value=np.inf))
        else:
            resid = 10 * np.log10((np.sum((mix - total) ** 2) + 1e-20) / (np.sum(mix ** 2) + 1e-20))
            if resid > cfg.mixture_tol_db:
                rows.append(_rows("bad_mixture", tid, MIXTURE, split[tid], value=resid))
        fps[tid], shapes[tid] = fingerprint(total, ss.sample_rate)
    order = {t: i for i, t in enumerate(sorted(split, key=lambda t: (("train", "reference", "test").index(split[t]), t)))}
    first = lambda a, b: (a, b) if order[a] < order[b] else (b, a)  # noqa: E731  train side first
    dup_pairs: set[tuple[str, str]] = set()
    by_hash: dict[str, list[str]] = {}
    for tid, h in song_hash.items():
        by_hash.setdefault(h, []).append(tid)
    for group in by_hash.values():
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                a2, b2 = first(a, b)
                dup_pairs.add((a2, b2))
                rows.append(_rows("duplicate_song", a2, None, split[a2], b2, split[b2], 1.0))
    by_stem: dict[str, list[tuple[str, str]]] = {}
    for key, h in stem_hash.items():
        by_stem.setdefault(h, []).append(key)
    for group in by_stem.values():
        for i, (a, la) in enumerate(group):
            for b, lb_ in group[i + 1:]:
                if first(a, b) not in dup_pairs and a != b:
                    (a2, l2), (b2, _) = sorted([(a, la), (b, lb_)], key=lambda k: order[k[0]])
                    rows.append(_rows("duplicate_stem", a2, l2, split[a2], b2, split[b2], 1.0))
    ids = list(fps)
    hop_s = 0.016
    max_lag = int(round(cfg.max_shift_s / hop_s))
    if len(ids) > 1:
        g = np.stack([shapes[t] for t in ids])
        cos = g @ g.T
        np.fill_diagonal(cos, -np.inf)
        k = min(cfg.candidates, len(ids) - 1)
        cand = {first(ids[i], ids[j]) for i in range(len(ids)) for j in np.argsort(-cos[i])[:k]}
    else:
        cand = set()
    best_other = 0.0
    for a, b in sorted(cand - dup_pairs, key=lambda p: (order[p[0]], order[p[1]])):
        sim = lagged_similarity(fps[a], fps[b], max_lag)
        if sim >= cfg.near_threshold:
            rows.append(_rows("near_duplicate_song", a, None, split[a], b, split[b], sim))
        else:
            best_other = max(best_other, sim)
    table = pd.DataFrame(rows, columns=list(COLUMNS)).astype(COLUMNS)
    metrics = {"songs": len(ids), "stems": len(ids) * len(LABELS),
               **{k: int((table.kind == k).sum()) for k in KINDS},
               "leaks": int(table.leak.sum()),
               "train_test_leaks": int((table.leak & (table.split == "train") & (table.other_split == "test")).sum()),
               "near_max_unflagged": round(best_other, 4), "pairs_verified": len(cand - dup_pairs)}
    return table, metrics
