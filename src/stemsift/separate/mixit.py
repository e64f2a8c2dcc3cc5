"""Mixture invariant training (MixIT) losses, pure torch and batched.

MixIT (Wisdom et al., NeurIPS 2020, "Unsupervised sound separation using mixture invariant training") trains a
separator on a mixture of two mixtures x1 + x2: the model's M outputs are remixed by the binary 2 x M matrix A
(each output goes to exactly one mixture) that best reconstructs (x1, x2), and the reconstruction error of that
remix is the loss. Wisdom et al., WASPAA 2021 ("Sparse, efficient, and semantic mixture invariant training")
add an efficient approximation of the search over A (least squares, then projection) and regularisers against
over-separation (sparsity, covariance) plus a weak-label classification loss (semantic).

Shapes: est (batch, M outputs, channels, samples), mixtures (batch, 2, channels, samples); channels and samples
together are one signal (the loss flattens them).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

EPS = 1e-8
METHODS = ("efficient", "exhaustive")
# Elements of one chunk of exhaustive remixes (batch x assignments x 2 x channels*samples): 2^24 float32 = 64 MiB.
CHUNK_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class MixITConfig:
    assignment: str = "efficient"    # 'efficient' (LS + projection, WASPAA 2021) or 'exhaustive' (all 2^M)
    num_outputs: int = 4             # M separator outputs
    snr_max: float = 30.0            # dB; soft threshold of the negative SNR loss
    sparsity_weight: float = 0.0
    covariance_weight: float = 0.0
    semantic_weight: float = 0.0
    consistency: bool = True         # project outputs so they sum to the input mixture


def neg_snr(ref: torch.Tensor, est: torch.Tensor, snr_max: float = 30.0, start_dim: int = 1) -> torch.Tensor:
    """Thresholded negative SNR, 10 log10(||y - ŷ||² + τ||y||² + eps) with τ = 10^(-snr_max/10)
    (neurips2020_mixit model.py `log_mse_loss`), over the dims from `start_dim` on (channels and samples
    flattened). Returns one value per leading index, e.g. (batch,) for (batch, channels, samples) inputs."""
    err = (ref - est).flatten(start_dim).pow(2).sum(-1)
    ref_pow = ref.flatten(start_dim).pow(2).sum(-1)
    tau = 10.0 ** (-snr_max / 10.0)
    # τ||y||² caps the SNR at snr_max so that well-separated examples stop dominating the gradient
    return 10.0 * torch.log10(err + tau * ref_pow + EPS)


def mixture_consistency(est: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """est (B, M, C, T), mix (B, C, T) -> est + (mix - Σ_m est_m) / M: the least-squares projection onto
    outputs that sum to the mixture, uniform weights (Wisdom et al. 2019, "Differentiable consistency
    constraints for improved deep speech enhancement", eq. 4)."""
    return est + (mix - est.sum(1)).unsqueeze(1) / est.shape[1]


def assignments(num_outputs: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """All 2^M binary mixing matrices (2^M, 2, M): row i says which outputs are summed into mixture i; every
    output goes to exactly one mixture (MixIT's constraint set, NeurIPS 2020 eq. 3)."""
    codes = torch.arange(2 ** num_outputs, device=device)
    to_second = (codes[:, None] >> torch.arange(num_outputs, device=device)) & 1  # bit m: output m -> mixture 2
    return torch.stack([1 - to_second, to_second], dim=1).to(dtype)


def _remix_loss(est: torch.Tensor, mixtures: torch.Tensor, mixing: torch.Tensor, snr_max: float) -> torch.Tensor:
    """Σ_i L(x_i, [A ŝ]_i) per example for one mixing matrix per example, mixing (B, 2, M)."""
    remix = torch.einsum("bim,bmct->bict", mixing.to(est.dtype), est)
    return neg_snr(mixtures, remix, snr_max, start_dim=2).sum(-1)


@torch.no_grad()
def _exhaustive_choice(est: torch.Tensor, mixtures: torch.Tensor, snr_max: float) -> torch.Tensor:
    """The best of all 2^M assignments per example (B, 2, M), remixes evaluated a chunk of assignments at a time."""
    b, m = est.shape[:2]
    s = est.flatten(2)                                   # (B, M, N)
    x = mixtures.flatten(2)                              # (B, 2, N)
    floor = 10.0 ** (-snr_max / 10.0) * x.pow(2).sum(-1) + EPS  # (B, 2)
    table = assignments(m, est.device, est.dtype)
    chunk = max(1, CHUNK_ELEMENTS // (b * 2 * s.shape[-1]))
    best_loss = torch.full((b,), float("inf"), device=est.device, dtype=est.dtype)
    best_idx = torch.zeros(b, dtype=torch.long, device=est.device)
    for start in range(0, len(table), chunk):
        a = table[start:start + chunk]                   # (K, 2, M)
        remix = torch.einsum("kim,bmn->bkin", a, s)      # (B, K, 2, N)
        err = (x.unsqueeze(1) - remix).pow_(2).sum(-1)   # (B, K, 2)
        loss = (10.0 * torch.log10(err + floor.unsqueeze(1))).sum(-1)  # (B, K)
        value, idx = loss.min(1)
        better = value < best_loss
        best_loss = torch.where(better, value, best_loss)
        best_idx = torch.where(better, idx + start, best_idx)
    return table[best_idx]


@torch.no_grad()
def least_squares_mixing(est: torch.Tensor, mixtures: torch.Tensor, ridge: float = 1e-6) -> torch.Tensor:
    """Unconstrained A_ls = argmin_A ||X - A Ŝ||² per example (B, 2, M), channels x samples as the sample axis:
    A_ls = X Ŝᵀ (Ŝ Ŝᵀ + λI)⁻¹ (WASPAA 2021, "efficient MixIT"). Solved on the M x M Gram matrix in float64;
    the ridge λ (relative to the mean output energy) keeps silent or duplicate outputs solvable."""
    s = est.flatten(2).double()
    x = mixtures.flatten(2).double()
    gram = s @ s.transpose(1, 2)                         # (B, M, M)
    cross = x @ s.transpose(1, 2)                        # (B, 2, M)
    m = gram.shape[-1]
    scale = gram.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(EPS)  # (B,)
    eye = torch.eye(m, dtype=gram.dtype, device=gram.device)
    gram = gram + ridge * scale[:, None, None] * eye
    # Gram is symmetric positive definite: A_lsᵀ = G⁻¹ (X Ŝᵀ)ᵀ
    return torch.linalg.solve(gram, cross.transpose(1, 2)).transpose(1, 2).to(est.dtype)


@torch.no_grad()
def _efficient_choice(est: torch.Tensor, mixtures: torch.Tensor) -> torch.Tensor:
    """Project A_ls onto the constraint set: each output goes to the mixture with the larger entry in its column
    (WASPAA 2021, "efficient MixIT")."""
    to_second = least_squares_mixing(est, mixtures).argmax(1)   # (B, M)
    return torch.stack([1 - to_second, to_second], dim=1).to(est.dtype)


def mixit_loss(est: torch.Tensor, mixtures: torch.Tensor, method: str = "efficient", snr_max: float = 30.0
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """MixIT loss per example (B,) and the chosen assignment (B, 2, M). est (B, M, C, T), mixtures (B, 2, C, T).
    The assignment is chosen without gradient; the loss is differentiable in est through the chosen remix
    (the gradient of a min is the gradient of its argmin branch, so this equals differentiating the min)."""
    if est.dim() != 4 or mixtures.dim() != 4 or mixtures.shape[1] != 2:
        raise ValueError(f"expected est (B, M, C, T) and mixtures (B, 2, C, T), got {tuple(est.shape)} "
                         f"and {tuple(mixtures.shape)}")
    if method == "exhaustive":
        mixing = _exhaustive_choice(est.detach(), mixtures, snr_max)
    elif method == "efficient":
        mixing = _efficient_choice(est.detach(), mixtures)
    else:
        raise ValueError(f"unknown MixIT assignment method {method!r} (use {', '.join(METHODS)})")
    return _remix_loss(est, mixtures, mixing, snr_max), mixing


def output_rms(est: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """RMS per output (B, M) over channels and samples; eps under the root keeps the gradient finite at silence."""
    return torch.sqrt(est.flatten(2).pow(2).mean(-1) + eps)


def sparsity_loss(est: torch.Tensor) -> torch.Tensor:
    """L1/L2 ratio of the per-output RMS vector r, ||r||_1 / ||r||_2 (WASPAA 2021, "sparsity losses"), per
    example: 1 when one output carries everything, √M when all outputs are equally loud."""
    r = output_rms(est)
    return r.sum(-1) / (r.pow(2).sum(-1).sqrt() + EPS)


def covariance_loss(est: torch.Tensor) -> torch.Tensor:
    """Sum over output pairs m != m' of the squared correlation coefficient of the output waveforms (channels x
    samples flattened, mean removed), per example: 0 for uncorrelated outputs, up to M(M-1) when all are equal.
    Follows the "covariance loss" of WASPAA 2021 ("discourages correlated outputs"); the paper's exact
    normalisation could not be checked here, this is the normalised (scale-free) covariance."""
    z = est.flatten(2)
    z = z - z.mean(-1, keepdim=True)
    cov = z @ z.transpose(1, 2)                          # (B, M, M), unnormalised
    var = cov.diagonal(dim1=1, dim2=2)
    corr = cov / torch.sqrt(var.unsqueeze(2) * var.unsqueeze(1) + EPS)
    off = 1.0 - torch.eye(est.shape[1], dtype=est.dtype, device=est.device)
    return (corr.pow(2) * off).sum((1, 2))


def semantic_loss(probs: torch.Tensor, weak_labels: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Weak-label loss of the mixture of mixtures, per example (B,): probs (B, M, K) class probabilities of each
    output, weak_labels (B, K) in {0, 1}. The MoM-level prediction of class k is the max over outputs: a class is
    present in a mixture iff some output carries it (an OR over outputs; a sum would reward spreading one
    source over outputs). Binary cross-entropy averaged over the K classes."""
    mom = probs.max(1).values.clamp(eps, 1.0 - eps)
    y = weak_labels.to(mom.dtype)
    return -(y * torch.log(mom) + (1.0 - y) * torch.log1p(-mom)).mean(-1)
