"""Open-Unmix presets, one model per target, spectrogram front end, save/load, and the Wiener Separator."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from openunmix.model import OpenUnmix, Separator
from openunmix.transforms import ComplexNorm, make_filterbanks
from openunmix.utils import bandwidth_to_max_bin

from stemsift import LABELS


@dataclass(frozen=True)
class ModelConfig:
    sample_rate: int = 16000
    n_fft: int = 1024
    n_hop: int = 256
    hidden_size: int = 128
    nb_layers: int = 3
    nb_channels: int = 2
    bandwidth: float = 8000.0  # Hz the LSTM sees (open-unmix's --bandwidth; 16 kHz in the paper)
    unidirectional: bool = False

    @property
    def nb_bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def max_bin(self) -> int:
        return int(bandwidth_to_max_bin(self.sample_rate, self.n_fft, min(self.bandwidth, self.sample_rate / 2)))


# small: measured 0.13 s per train step (batch 8 x 6 s) on 2 CPU cores; paper: open-unmix's UMX (44.1 kHz).
PRESETS = {
    "small": ModelConfig(),
    "paper": ModelConfig(sample_rate=44100, n_fft=4096, n_hop=1024, hidden_size=512, nb_layers=3, bandwidth=16000.0),
}


def preset(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r} (use {', '.join(PRESETS)})")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})


def spectrogram(cfg: ModelConfig) -> torch.nn.Module:
    """Waveform (batch, channels, samples) -> magnitude (batch, channels, bins, frames), as open-unmix train.py."""
    stft, _ = make_filterbanks(n_fft=cfg.n_fft, n_hop=cfg.n_hop, sample_rate=cfg.sample_rate, center=False)
    return torch.nn.Sequential(stft, ComplexNorm(mono=cfg.nb_channels == 1))


def build(cfg: ModelConfig, input_mean=None, input_scale=None) -> OpenUnmix:
    return OpenUnmix(nb_bins=cfg.nb_bins, nb_channels=cfg.nb_channels, hidden_size=cfg.hidden_size,
                     nb_layers=cfg.nb_layers, unidirectional=cfg.unidirectional, max_bin=cfg.max_bin,
                     input_mean=input_mean, input_scale=input_scale)


def save(models: dict[str, OpenUnmix], cfg: ModelConfig, folder: str | Path, extra: dict | None = None) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for target, m in models.items():
        torch.save(m.state_dict(), folder / f"{target}.pth")
    (folder / "separator.json").write_text(json.dumps({"model": asdict(cfg), "targets": list(models), **(extra or {})},
                                                      indent=2, sort_keys=True) + "\n")


def load(folder: str | Path, device: str = "cpu") -> tuple[dict[str, OpenUnmix], ModelConfig, dict]:
    folder = Path(folder)
    meta = json.loads((folder / "separator.json").read_text())
    cfg = ModelConfig(**meta["model"])
    models = {}
    for target in meta["targets"]:
        m = build(cfg)
        m.load_state_dict(torch.load(folder / f"{target}.pth", map_location=device, weights_only=True))
        models[target] = m.to(device).eval()
    return models, cfg, meta


def separator(models: dict[str, OpenUnmix], cfg: ModelConfig, niter: int = 1, wiener_win_len: int = 300) -> Separator:
    """open-unmix's Separator: all targets together, multichannel Wiener filtering (niter EM iterations)."""
    sep = Separator({t: models[t] for t in LABELS if t in models}, niter=niter, softmask=False, residual=False,
                    sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, n_hop=cfg.n_hop, nb_channels=cfg.nb_channels,
                    wiener_win_len=wiener_win_len, filterbank="torch")
    sep.freeze()
    return sep


def resolve_device(device: str, key: str = "train.device") -> torch.device:
    """`auto` -> cuda when there is one, else cpu; `key` is the params key the value came from (for the error)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"{key} is {device!r} but no CUDA device is available (use auto or cpu)")
    return torch.device(device)
