"""Separating songs with a MixIT model and scoring its unlabeled outputs.

* FUSS-style scores (dcase2020_fuss_baseline evaluate_lib.py `compute_metrics`): outputs aligned to the
  active reference stems by the best assignment on the SI-SNR matrix; multi-source SI-SNR improvement (MSi)
  over active pairs for inputs with >= 2 active stems; single-source reconstruction SI-SNR (1S) of the
  best-matching output for inputs with one active stem; under/equal/over-separation from output powers.
* Mapping outputs to the 4 targets (MixIT outputs carry no labels): `oracle_mapping` (by reference, an upper
  bound) or `semantic_mapping` (a classifier's probabilities); one output per target first (Hungarian), the
  rest to their best target, so a target's estimate is the sum of its outputs (`targets_from_mapping`).

Arrays are numpy (frames, channels) per signal, stacked on a leading axis.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.optimize import linear_sum_assignment

from stemsift import LABELS
from stemsift.audio import resample
from stemsift.classify import model as clsmodel
from stemsift.classify.model import probability_fn
from stemsift.separate.evaluate import score_tracks, summarize
from stemsift.separate.mixit_model import load_mixit
from stemsift.stemset import StemSet

EPS = 1e-8


def _chunk_outputs(model, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x)[0].cpu().numpy()                       # (M, C, T)


def separate_outputs(model, mixture: np.ndarray, device, chunk_s: float = 60.0, overlap_s: float = 1.0
                     ) -> np.ndarray:
    """Mixture (frames, channels) -> the model's outputs (M, frames, channels). Songs longer than `chunk_s` are
    separated in chunks that overlap by `overlap_s`; MixIT's output order is arbitrary per input, so each chunk's
    outputs are permuted to best match (correlation, Hungarian) the previous chunk's on the overlap."""
    model.eval()
    sr = model.cfg.sample_rate
    x = torch.from_numpy(np.ascontiguousarray(mixture.T, dtype=np.float32))[None].to(device)
    n = x.shape[-1]
    chunk, overlap = int(chunk_s * sr), int(overlap_s * sr)
    if not 0 <= overlap < chunk:
        raise ValueError(f"overlap_s={overlap_s} must be >= 0 and shorter than chunk_s={chunk_s}")
    if n <= chunk:
        return _chunk_outputs(model, x).transpose(0, 2, 1)
    out = _chunk_outputs(model, x[..., :chunk])
    pos = chunk
    while pos < n:
        start = pos - overlap
        cur = _chunk_outputs(model, x[..., start:start + chunk])
        prev, new = out[..., start:].reshape(len(out), -1), cur[..., :overlap].reshape(len(cur), -1)
        _, perm = linear_sum_assignment(-(prev @ new.T))      # match chunk outputs to previous outputs
        out = np.concatenate([out, cur[perm][..., overlap:]], axis=-1)
        pos = start + cur.shape[-1]
    return out[..., :n].transpose(0, 2, 1)


def si_snr(ref: np.ndarray, est: np.ndarray, eps: float = EPS) -> float:
    """Scale-invariant SNR in dB over all samples and channels: 10 log10(cos² / (1 - cos²)) of the unit-norm
    signals (metrics.py `signal_to_noise_ratio_gain_invariant`, Le Roux et al. 2019 SI-SDR). A silent signal
    gives -80 dB."""
    r = np.asarray(ref, dtype=np.float64).ravel()
    e = np.asarray(est, dtype=np.float64).ravel()
    r = r / np.sqrt(max(r @ r, 1e-16))
    e = e / np.sqrt(max(e @ e, 1e-16))
    cos = r @ e
    noise = 1.0 - cos ** 2
    if noise < 0.01:  # 1 - cos² cancels near cos² = 1: there the direct residual is accurate (as metrics.py)
        noise = np.sum((e - cos * r) ** 2)
    return float(10 * np.log10((cos ** 2 + eps) / (noise + eps)))


def si_snr_matrix(refs: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """(refs, outputs) SI-SNR of every reference against every output."""
    return np.array([[si_snr(r, o) for o in outputs] for r in refs])


def fuss_metrics(outputs: np.ndarray, refs: np.ndarray, mixture: np.ndarray) -> dict:
    """FUSS scores (evaluate_lib.py `compute_metrics`) of outputs (M, frames, ch) against reference stems
    (S, frames, ch) of the input mixture (frames, ch).

    Active references have RMS > 1e-8; outputs are aligned to them by the assignment maximising total SI-SNR
    (the FUSS permutation-invariant alignment; silent references do not change it). An output is active when its
    power exceeds 1% of the quietest active reference's. Returns per-reference arrays (over active references:
    sisnr_separated, sisnr_mixture, sisnr_improvement, pair_active), `msi` = mean SI-SNR improvement over active
    pairs when >= 2 references are active (else NaN), `ss` = SI-SNR of the best output when exactly one is
    active (FUSS's single-source reconstruction, else NaN), counts and under/equal/over-separation flags."""
    power_out = np.mean(np.asarray(outputs, dtype=np.float64) ** 2, axis=(1, 2))
    power_ref = np.mean(np.asarray(refs, dtype=np.float64) ** 2, axis=(1, 2))
    active = np.sqrt(power_ref) > 1e-8
    if not active.any():
        raise ValueError("all reference stems are silent (FUSS skips such examples)")
    act_refs = refs[active]
    scores = si_snr_matrix(act_refs, outputs)
    rows, cols = linear_sum_assignment(scores, maximize=True)
    matched = np.full(len(act_refs), -1)
    matched[rows] = cols
    sep = np.array([scores[i, j] if j >= 0 else si_snr(act_refs[i], np.zeros_like(act_refs[i]))
                    for i, j in enumerate(matched)])
    mix = np.array([si_snr(r, mixture) for r in act_refs])
    out_active = power_out > 0.01 * power_ref[active].min()
    pair_active = np.array([j >= 0 and out_active[j] for j in matched])
    n_refs, n_seps = int(active.sum()), int(out_active.sum())
    imp = sep - mix
    return {
        "sisnr_separated": sep, "sisnr_mixture": mix, "sisnr_improvement": imp, "pair_active": pair_active,
        "matched_output": matched, "num_active_refs": n_refs, "num_active_seps": n_seps,
        "msi": float(imp[pair_active].mean()) if n_refs >= 2 and pair_active.any() else float("nan"),
        "ss": float(sep[0]) if n_refs == 1 else float("nan"),
        "under_separation": n_seps < n_refs, "equal_separation": n_seps == n_refs,
        "over_separation": n_seps > n_refs,
    }


def cover_mapping(affinity: np.ndarray) -> list[int]:
    """Outputs -> targets from an (M outputs, K targets) affinity: first a one-to-one assignment maximising the
    total affinity (Hungarian), so every target gets an output when M >= K (an empty target would be a silent
    estimate, which museval cannot score), then every remaining output to its own best target."""
    affinity = np.asarray(affinity, dtype=np.float64)
    mapping = [int(k) for k in affinity.argmax(1)]
    rows, cols = linear_sum_assignment(affinity, maximize=True)
    for m, k in zip(rows, cols):
        mapping[m] = int(k)
    return mapping


def oracle_mapping(outputs: np.ndarray, refs: np.ndarray) -> list[int]:
    """Each output (M, frames, ch) -> a reference (K, frames, ch) by SI-SNR (`cover_mapping`): an upper bound,
    the references are the answer."""
    return cover_mapping(si_snr_matrix(refs, outputs).T)


def semantic_mapping(probs: np.ndarray) -> list[int]:
    """Class probabilities of each output (M, K) -> its class (`cover_mapping`: every class gets an output)."""
    return cover_mapping(probs)


def targets_from_mapping(outputs: np.ndarray, mapping: list[int], num_targets: int) -> np.ndarray:
    """(K, frames, ch) target estimates: the sum of the outputs mapped to each target (zeros where none)."""
    targets = np.zeros((num_targets, *outputs.shape[1:]), dtype=outputs.dtype)
    for m, k in enumerate(mapping):
        targets[k] += outputs[m]
    return targets


# Scoring a trained MixIT separator on a stem set's test split (the evaluate stage's MixIT branch).

def mixit_outputs(ss: StemSet, folder: Path, track_ids: list[str], psi: Path | None, device):
    """Per song: (track_id, references, outputs (M, frames, ch), Ψ's probabilities per output (M, 4) or None,
    FUSS scores of the song mixture, single-source reconstruction SI-SNR per non-silent stem fed alone)."""
    model, cfg, _ = load_mixit(folder, str(device))
    classify = probability_fn(clsmodel.load(psi, str(device)), cfg.sample_rate) if psi else None
    for tid in track_ids:
        refs = {t: resample(x, ss.sample_rate, cfg.sample_rate) for t, x in ss.load_track(tid).items()}
        stack = np.stack([refs[t] for t in LABELS])
        mix = stack.sum(0)
        outs = separate_outputs(model, mix, device)
        probs = None
        if classify is not None:
            with torch.no_grad():
                probs = classify(torch.from_numpy(np.ascontiguousarray(outs.transpose(0, 2, 1), np.float32)).to(device)).cpu().numpy()
        single = [fuss_metrics(separate_outputs(model, x, device), x[None], x)["ss"]
                  for x in stack if np.sqrt(np.mean(x.astype(np.float64) ** 2)) > 1e-4]
        yield tid, refs, outs, probs, fuss_metrics(outs, stack, mix), single


def score_mixit(ss: StemSet, folder: Path, workers: int, psi: Path | None, device) -> pd.DataFrame:
    """A MixIT separator: museval of the 4 targets built from its outputs by the semantic mapping (Ψ's class of
    each output; `mapping` = semantic) and by the oracle mapping (each output to the reference it matches best;
    an upper bound, `mapping` = oracle), plus FUSS-style SI-SNR columns (repeated on each row of a song)."""
    test = ss.track_ids("test")
    items, extra = {"semantic": [], "oracle": []}, []
    for tid, refs, outs, probs, fuss, single in mixit_outputs(ss, folder, test, psi, device):
        stack = np.stack([refs[t] for t in LABELS])
        for kind, mapping in (("semantic", semantic_mapping(probs) if probs is not None else None),
                              ("oracle", oracle_mapping(outs, stack))):
            if mapping is not None:
                est = targets_from_mapping(outs, mapping, len(LABELS))
                items[kind].append((tid, refs, {t: est[i] for i, t in enumerate(LABELS)}))
        extra.append({"track_id": tid, "si_snri": fuss["msi"], "si_snr_single": float(np.nanmean(single)) if single else np.nan,
                      "active_outputs": fuss["num_active_seps"]})
    sr = json.loads((folder / "separator.json").read_text())["model"]["sample_rate"]  # no second model load
    frames = [score_tracks(v, sr, workers=workers).assign(mapping=k) for k, v in items.items() if v]
    return pd.concat(frames, ignore_index=True).merge(pd.DataFrame(extra), on="track_id")


def summarize_mixit(per_track: pd.DataFrame) -> dict:
    """The supervised columns from the semantic mapping (the oracle one when there is no Ψ), the oracle mapping
    under sdr_oraclemap_*, and the FUSS means: si_snri (multi-source SI-SNR improvement), si_snr_single."""
    head = "semantic" if (per_track.mapping == "semantic").any() else "oracle"
    out = summarize(per_track[per_track.mapping == head])
    oracle = summarize(per_track[per_track.mapping == "oracle"])
    out.update({f"sdr_oraclemap_{k[4:]}": v for k, v in oracle.items() if k.startswith("sdr_") and not k.startswith("sdr_utt")})
    songs = per_track.drop_duplicates("track_id")
    out["si_snri"] = round(float(np.nanmean(songs.si_snri)), 3)
    out["si_snr_single"] = round(float(np.nanmean(songs.si_snr_single)), 3)
    out["active_outputs"] = round(float(songs.active_outputs.mean()), 2)
    out["mapping"] = head
    return out
