"""A multi-output Open-Unmix for MixIT: one network predicts M sigmoid masks per (channel, bin, frame) of the
mixture STFT; the masked complex STFTs are inverted to M waveforms (the mask-based separator of the MixIT
papers, with Open-Unmix's fc -> BiLSTM -> fc body, open-unmix-pytorch model.py). Save/load mirror
separate/model.py: ``mixit.pth`` + ``separator.json`` with ``"method": "mixit"``."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from openunmix.transforms import ComplexNorm, make_filterbanks
from torch import nn

from stemsift.separate.mixit import mixture_consistency
from stemsift.separate.model import ModelConfig

WEIGHTS = "mixit.pth"


def stft_pair(cfg: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """(stft, istft) with center=True on both sides: centred frames make istft(stft(x), length=T) return x."""
    return make_filterbanks(n_fft=cfg.n_fft, n_hop=cfg.n_hop, sample_rate=cfg.sample_rate, center=True)


def magnitude(cfg: ModelConfig) -> nn.Module:
    """Waveform (B, C, T) -> magnitude (B, C, bins, frames) as the MixIT model sees it (for input statistics)."""
    return nn.Sequential(stft_pair(cfg)[0], ComplexNorm(mono=False))


class MixITUnmix(nn.Module):
    """Mixture (B, C, T) -> M outputs (B, M, C, T).

    input_mean / input_scale: per-bin mixture-magnitude statistics (nb_bins,), as OpenUnmix (trainable, stored
    negated / inverted). With ``consistency`` the outputs are projected to sum to the input mixture."""

    def __init__(self, cfg: ModelConfig, num_outputs: int, input_mean: np.ndarray | None = None,
                 input_scale: np.ndarray | None = None, consistency: bool = True):
        super().__init__()
        self.cfg, self.num_outputs, self.consistency = cfg, num_outputs, consistency
        self.nb_bins, self.max_bin, self.nb_channels = cfg.nb_bins, cfg.max_bin, cfg.nb_channels
        self.stft, self.istft = stft_pair(cfg)
        self.norm = ComplexNorm(mono=False)
        hidden = cfg.hidden_size
        self.fc1 = nn.Linear(self.max_bin * self.nb_channels, hidden, bias=False)
        self.bn1 = nn.BatchNorm1d(hidden)
        self.lstm = nn.LSTM(input_size=hidden, hidden_size=hidden if cfg.unidirectional else hidden // 2,
                            num_layers=cfg.nb_layers, bidirectional=not cfg.unidirectional,
                            dropout=0.4 if cfg.nb_layers > 1 else 0.0)
        self.fc2 = nn.Linear(2 * hidden, hidden, bias=False)
        self.bn2 = nn.BatchNorm1d(hidden)
        n_masks = num_outputs * self.nb_channels * self.nb_bins
        self.fc3 = nn.Linear(hidden, n_masks, bias=False)
        self.bn3 = nn.BatchNorm1d(n_masks)
        mean = torch.zeros(self.max_bin) if input_mean is None else -torch.as_tensor(input_mean[:self.max_bin])
        scale = torch.ones(self.max_bin) if input_scale is None else 1.0 / torch.as_tensor(input_scale[:self.max_bin])
        self.input_mean = nn.Parameter(mean.float())
        self.input_scale = nn.Parameter(scale.float())

    def masks(self, mag: torch.Tensor) -> torch.Tensor:
        """Magnitude (B, C, bins, frames) -> masks in [0, 1] (B, M, C, bins, frames)."""
        x = mag.permute(3, 0, 1, 2)[..., :self.max_bin]          # (frames, B, C, max_bin)
        frames, batch = x.shape[:2]
        x = (x + self.input_mean) * self.input_scale
        x = torch.tanh(self.bn1(self.fc1(x.reshape(frames * batch, -1)))).reshape(frames, batch, -1)
        x = torch.cat([x, self.lstm(x)[0]], -1)                  # skip connection, as OpenUnmix
        x = torch.relu(self.bn2(self.fc2(x.reshape(frames * batch, -1))))
        x = torch.sigmoid(self.bn3(self.fc3(x)))
        x = x.reshape(frames, batch, self.num_outputs, self.nb_channels, self.nb_bins)
        return x.permute(1, 2, 3, 4, 0)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        t = mix.shape[-1]
        spec = self.stft(mix)                                    # (B, C, bins, frames, 2)
        masked = self.masks(self.norm(spec)).unsqueeze(-1) * spec.unsqueeze(1)
        est = self.istft(masked, length=t)                       # (B, M, C, T)
        return mixture_consistency(est, mix) if self.consistency else est


def save_mixit(model: MixITUnmix, cfg: ModelConfig, num_outputs: int, folder: str | Path,
               extra: dict | None = None) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / WEIGHTS)
    meta = {"model": asdict(cfg), "method": "mixit", "num_outputs": int(num_outputs),
            "consistency": bool(model.consistency), **(extra or {})}
    (folder / "separator.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def load_mixit(folder: str | Path, device: str = "cpu") -> tuple[MixITUnmix, ModelConfig, dict]:
    folder = Path(folder)
    meta = json.loads((folder / "separator.json").read_text())
    if meta.get("method") != "mixit":
        raise ValueError(f"{folder}: separator.json is not a MixIT separator (method={meta.get('method')!r})")
    cfg = ModelConfig(**meta["model"])
    model = MixITUnmix(cfg, meta["num_outputs"], consistency=meta.get("consistency", True))
    model.load_state_dict(torch.load(folder / WEIGHTS, map_location=device, weights_only=True))
    return model.to(device).eval(), cfg, meta
