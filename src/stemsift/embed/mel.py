"""Log-mel frames plus three spectral descriptors: the offline, weight-free default embedder."""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from stemsift.embed.base import Embedder, register

EPS = 1e-10


@register
class MelEmbedder(Embedder):
    """n_mels log-mel energies + spectral flatness, log-Hz centroid and log RMS per STFT frame."""

    name = "mel"
    defaults: ClassVar[dict[str, Any]] = {"n_mels": 64, "n_fft": 1024, "hop": 512, "sample_rate": 16000, "fmin": 20.0}

    def __init__(self, device: str = "cpu", **options) -> None:
        super().__init__(device, **options)
        o = self.options
        if o["sample_rate"] < 1000 or o["n_fft"] < 16 or o["hop"] <= 0:
            raise self._fail(f"need sample_rate >= 1000, n_fft >= 16 and hop > 0 (got {o['sample_rate']}, "
                             f"{o['n_fft']}, {o['hop']})")
        if not 1 <= o["n_mels"] <= o["n_fft"] // 2 + 1:
            raise self._fail(f"n_mels must be in 1..{o['n_fft'] // 2 + 1} for n_fft {o['n_fft']}")
        if not 0.0 <= o["fmin"] < o["sample_rate"] / 2:
            raise self._fail(f"fmin must be in [0, {o['sample_rate'] / 2:g}) Hz, got {o['fmin']}")
        self.sample_rate = o["sample_rate"]
        self.dim = o["n_mels"] + 3
        self.hop_seconds = o["hop"] / o["sample_rate"]
        self._tables: tuple | None = None

    def _setup(self):
        """Window, mel filterbank and bin frequencies, built once on the target device."""
        if self._tables is None:
            import torch
            from torchaudio.functional import melscale_fbanks

            o = self.options
            n_bins = o["n_fft"] // 2 + 1
            window = torch.hann_window(o["n_fft"], device=self.device)
            fb = melscale_fbanks(n_bins, o["fmin"], o["sample_rate"] / 2, o["n_mels"], o["sample_rate"],
                                 norm="slaney", mel_scale="slaney").to(self.device)
            freqs = torch.linspace(0, o["sample_rate"] / 2, n_bins, device=self.device)
            band = freqs >= o["fmin"]
            # One-sided spectrum -> windowed mean square (Parseval): DC and Nyquist count once, others twice.
            weight = torch.full((n_bins,), 2.0, device=self.device)
            weight[0] = weight[-1] = 1.0
            weight /= o["n_fft"] * float(window.square().sum())
            self._tables = (window, fb, freqs, band, weight)
        return self._tables

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        import torch

        x = self._mono(audio, sample_rate)
        o = self.options
        window, fb, freqs, band, weight = self._setup()
        with torch.inference_mode():
            t = torch.from_numpy(x).to(self.device)
            if t.numel() < o["n_fft"] // 2 + 1:  # reflect padding needs at least n_fft/2 + 1 samples
                t = torch.nn.functional.pad(t, (0, o["n_fft"] // 2 + 1 - t.numel()))
            spec = torch.stft(t, o["n_fft"], o["hop"], window=window, center=True, pad_mode="reflect",
                              return_complex=True)
            power = spec.real.square() + spec.imag.square()  # (bins, frames)
            logmel = torch.log(fb.T @ power + EPS)
            p = power[band]
            # Spectral flatness (Wiener entropy): geometric / arithmetic mean; 1 for white noise, ~0 for a tone.
            flat = torch.exp(torch.log(p + EPS).mean(0)) / (p.mean(0) + EPS)
            # Centroid on a log-frequency axis scaled to [0, 1] between fmin (or 20 Hz) and Nyquist.
            lo = max(o["fmin"], 20.0)
            cent = (freqs[band, None] * p).sum(0) / (p.sum(0) + EPS)
            cent = torch.log(cent.clamp(min=lo) / lo) / np.log(o["sample_rate"] / 2 / lo)
            log_rms = 0.5 * torch.log((weight[:, None] * power).sum(0) + EPS)
            feats = torch.cat([logmel, flat[None], cent[None], log_rms[None]], 0).T
        return feats.float().cpu().numpy()
