"""Ψ: log-mel front end + timm's ConvNeXt, four sigmoid outputs (vocals, bass, drums, other)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torchaudio.transforms import MelSpectrogram

from stemsift import LABELS


@dataclass(frozen=True)
class ClassifierConfig:
    sample_rate: int = 16000
    n_fft: int = 1024
    hop: int = 512
    n_mels: int = 64
    seg_dur: float = 2.0            # seconds per training example / inference window
    depths: tuple = (1, 1, 2, 1)
    dims: tuple = (16, 32, 64, 128)
    drop_path: float = 0.0

    @property
    def seg_len(self) -> int:
        return int(round(self.seg_dur * self.sample_rate))


# small: measured ~50 ms per batch-32 train step on 2 CPU cores; paper: ConvNeXt-T (Liu et al. 2022) as Koo'23.
PRESETS = {
    "small": ClassifierConfig(),
    "paper": ClassifierConfig(sample_rate=44100, n_fft=2048, hop=512, n_mels=128, seg_dur=6.0,
                              depths=(3, 3, 9, 3), dims=(96, 192, 384, 768), drop_path=0.1),
}


def preset(name: str, **overrides) -> ClassifierConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown classifier preset {name!r} (use {', '.join(PRESETS)})")
    over = {k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items() if v is not None}
    return replace(PRESETS[name], **over)


class InstrumentClassifier(torch.nn.Module):
    """Waveform (batch, samples) mono -> logits (batch, 4)."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        self.mel = MelSpectrogram(sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop,
                                  n_mels=cfg.n_mels, power=2.0)
        self.bn0 = torch.nn.BatchNorm2d(cfg.n_mels)  # per-mel-bin input normalisation (PANNs, Kong et al. 2020)
        from timm.models.convnext import ConvNeXt  # ~1.2 s to import: stages that never build Ψ skip it

        self.net = ConvNeXt(in_chans=1, num_classes=len(LABELS), depths=tuple(cfg.depths), dims=tuple(cfg.dims),
                            drop_path_rate=cfg.drop_path)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = torch.log(self.mel(wav) + 1e-6)                     # (batch, mels, frames)
        x = self.bn0(x.unsqueeze(2)).transpose(1, 2)              # (batch, 1, mels, frames)
        return self.net(x)


def save(model: InstrumentClassifier, folder: str | Path, extra: dict | None = None) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "classifier.pth")
    (folder / "classifier.json").write_text(json.dumps({"config": asdict(model.cfg), **(extra or {})},
                                                       indent=2, sort_keys=True) + "\n")


def load(folder: str | Path, device: str = "cpu") -> InstrumentClassifier:
    folder = Path(folder)
    meta = json.loads((folder / "classifier.json").read_text())
    cfg = ClassifierConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()})
    m = InstrumentClassifier(cfg)
    m.load_state_dict(torch.load(folder / "classifier.pth", map_location=device, weights_only=True))
    return m.to(device).eval()


def probability_fn(model: InstrumentClassifier, sample_rate: int):
    """A frozen Ψ as a function of separator waveforms (N, channels, samples) at `sample_rate` -> probabilities
    (N, 4): channels averaged, resampled to Ψ's rate; gradients flow to the waveforms, never into Ψ."""
    import torchaudio.functional as AF

    model.eval().requires_grad_(False)

    def probs(wav: torch.Tensor) -> torch.Tensor:
        x = wav.mean(1)
        if sample_rate != model.cfg.sample_rate:
            x = AF.resample(x, sample_rate, model.cfg.sample_rate)
        return torch.sigmoid(model(x))
    return probs
