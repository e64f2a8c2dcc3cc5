"""CDPAM encoder frames (Manocha et al. 2021, "CDPAM: Contrastive learning for perceptual audio similarity",
arXiv:2102.05109; github.com/pranaymanocha/PerceptualAudio). Weights ship in the `cdpam` 0.0.6 wheel (MIT
licence, per its PyPI classifier): nothing is downloaded."""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from stemsift.embed.base import Embedder, register

CDPAM_RATE = 22050  # the rate cdpam.load_audio resamples to; the encoder was trained on it
WEIGHTS = "CDPAM_trained/scratchJNDdefault_best_model.pth"
# FINnet's constructor arguments as cdpam.DPAM builds it for these weights (cdpam/cdpam.py).
FINNET = {"encoder_layers": 16, "encoder_filters": 64, "ndim": [16, 6], "classif_dp": 0.05, "classif_BN": 0,
          "classif_act": "no", "input_size": 512}
STRIDE = 16  # the encoder halves time after every 4th of its 16 conv layers
HALVES = {"acoustic": slice(0, 512), "content": slice(512, 1024), "both": slice(0, 1024)}  # base_encoder's split
GATE_DB = -40.0  # blocks this far below the stem's loudest block are silence when placing windows


@functools.lru_cache(maxsize=1)
def _package_dir() -> Path:
    """The installed cdpam package, found without running its __init__ (which imports librosa and resampy)."""
    spec = importlib.util.find_spec("cdpam")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("cdpam is not installed (make setup installs cdpam==0.0.6)")
    return Path(next(iter(spec.submodule_search_locations)))


@functools.lru_cache(maxsize=1)
def _models_module():
    """cdpam/models.py loaded on its own: it needs torch only, the package __init__ needs librosa too."""
    spec = importlib.util.spec_from_file_location("_stemsift_cdpam_models", _package_dir() / "models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def weights_path() -> Path:
    return _package_dir() / WEIGHTS


@register
class CdpamEmbedder(Embedder):
    """`windows` windows of `window_s` s per stem, placed at even quantiles of the stem's non-silent time; each
    window's last encoder feature map (1024 channels at 22050/16 Hz, before base_encoder's time mean) averaged
    over `block_s` blocks, keeping the `half` of the channels CDPAM trained to carry content or acoustics."""

    name = "cdpam"
    defaults: ClassVar[dict[str, Any]] = {"windows": 2, "window_s": 1.0, "block_s": 0.1, "half": "content"}

    def __init__(self, device: str = "cpu", **options) -> None:
        super().__init__(device, **options)
        o = self.options
        if o["half"] not in HALVES:
            raise self._fail(f"half must be one of {', '.join(HALVES)}, got '{o['half']}'")
        if o["windows"] < 1:
            raise self._fail(f"windows must be >= 1, got {o['windows']}")
        if not 0.01 <= o["block_s"] <= o["window_s"] <= 30.0:  # a block spans >= 13 feature frames
            raise self._fail(f"need 0.01 <= block_s <= window_s <= 30 (got block_s {o['block_s']}, "
                             f"window_s {o['window_s']})")
        self.sample_rate = CDPAM_RATE
        self.window = round(o["window_s"] * CDPAM_RATE)
        self.blocks = max(1, round(o["window_s"] / o["block_s"]))  # per window, equal up to one feature frame
        self.hop_seconds = o["window_s"] / self.blocks
        self.half = HALVES[o["half"]]
        self.dim = self.half.stop - self.half.start
        self._encoder = self._load()

    def _load(self):
        import torch

        path = weights_path()
        if not path.is_file():
            raise self._fail(f"weights {path} missing from the cdpam install")
        net = _models_module().FINnet(**FINNET)
        state = torch.load(path, map_location="cpu", weights_only=False)["state"]  # a 2020 pickle with a dict
        net.load_state_dict(state)
        return net.base_encoder.eval().to(self.device)  # only the encoder is used: no distance head

    def _starts(self, x: np.ndarray) -> list[int]:
        """Window starts centred on even quantiles of the non-silent 0.1 s blocks (level-relative gate, so a
        stem's loudness does not move them); deterministic, and clipped to the stem."""
        n, k, w = len(x), self.options["windows"], self.window
        if n <= w:
            return [0] * k
        block = CDPAM_RATE // 10
        rms = np.sqrt(np.mean(x[: n // block * block].reshape(-1, block).astype(np.float64) ** 2, axis=1))
        active = np.flatnonzero(rms > rms.max() * 10 ** (GATE_DB / 20)) if rms.size and rms.max() > 0 else []
        centres = (np.asarray(active, dtype=np.float64) + 0.5) * block if len(active) else np.arange(n) + 0.5
        picks = np.quantile(centres, (np.arange(k) + 0.5) / k, method="nearest")
        return [int(np.clip(round(c - w / 2), 0, n - w)) for c in picks]

    def _feature_map(self, x):
        """base_encoder.forward without its final time mean, and only the kept half's channels of the last
        layer (its conv is 1/9 of the compute): (batch, dim, samples / 16)."""
        import torch.nn.functional as F

        e, last = self._encoder, self._encoder.num_layers - 1
        for i in range(last):
            x = F.leaky_relu(e.ebatch[i](e.encoder[i](x)), 0.1)
            if (i + 1) % 4 == 0:
                x = x[:, :, ::2]
        conv, bn, h = e.encoder[last], e.ebatch[last], self.half
        x = F.conv1d(x, conv.weight[h], conv.bias[h], padding=conv.padding)
        x = F.batch_norm(x, bn.running_mean[h], bn.running_var[h], bn.weight[h], bn.bias[h], eps=bn.eps)
        return F.leaky_relu(x, 0.1)[:, :, ::2]

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        import torch

        x = self._mono(audio, sample_rate)
        w = self.window
        batch = np.zeros((self.options["windows"], w), dtype=np.float32)  # short stems are zero-padded
        for row, s in zip(batch, self._starts(x)):
            seg = x[s:s + w]
            row[: len(seg)] = seg
        batch = np.round(np.clip(batch, -1.0, 1.0) * 32768.0)  # cdpam.load_audio's int16 scale
        with torch.inference_mode():
            fmap = self._feature_map(torch.from_numpy(batch)[:, None].to(self.device))
            edges = np.linspace(0, fmap.shape[2], self.blocks + 1).round().astype(int)
            frames = torch.stack([fmap[:, :, a:b].mean(2) for a, b in zip(edges[:-1], edges[1:])], 1)
        return frames.reshape(-1, self.dim).float().cpu().numpy()  # (windows * blocks, dim), window-major
