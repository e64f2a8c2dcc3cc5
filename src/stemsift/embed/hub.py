"""Hugging Face audio encoders: CLAP (Wu et al. 2023, arXiv:2211.06687) and MERT (Li et al. 2023,
arXiv:2306.00107), loaded offline from a local directory or the HF cache, never downloaded by default."""
from __future__ import annotations

import hashlib
import json
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from stemsift.embed.base import Embedder, register


def _local_path(model: str) -> Path | None:
    """The directory a model string names, or None for a hub id ("org/name")."""
    p = Path(model).expanduser()
    if p.exists() or model.startswith(("/", ".", "~")) or model.count("/") != 1:
        return p
    return None


def _fingerprint(path: Path) -> str:
    """Cheap identity of a model directory: config files' bytes plus the other files' names and sizes."""
    h = hashlib.sha1()
    for f in sorted(path.iterdir()):
        if f.is_file():
            h.update(f.name.encode())
            h.update(f.read_bytes() if f.suffix == ".json" else str(f.stat().st_size).encode())
    return h.hexdigest()[:16]


@contextmanager
def _quiet_transformers():
    """No load report or progress bars on stderr: missing weights are checked (and refused) by us."""
    from transformers.utils import logging

    level, bar = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bar:
            logging.enable_progress_bar()


class HubEmbedder(Embedder):
    """Shared loading: a local directory or a cached hub id, one-line errors, models moved to the device."""

    defaults: ClassVar[dict[str, Any]] = {"model": "", "trust_remote_code": False, "local_files_only": True}
    model_types: ClassVar[tuple[str, ...]] = ()  # config.json model_type values accepted without building the model

    def __init__(self, device: str = "cpu", **options) -> None:
        super().__init__(device, **options)
        model = self.options["model"]
        if not model.strip():
            raise self._fail(f"embed.{self.name}.model is empty")
        self._path = _local_path(model)
        if self._path is not None and not self._path.is_dir():
            raise self._cannot_load("no such directory")
        self._check_model_type()
        self._load()

    def _check_model_type(self) -> None:
        """Refuse a local checkpoint of another architecture before building a full-size random model."""
        cfg = self._path / "config.json" if self._path is not None else None
        if not self.model_types or self.options["trust_remote_code"] or cfg is None or not cfg.is_file():
            return
        try:
            kind = json.loads(cfg.read_text()).get("model_type")
        except (OSError, ValueError, AttributeError):
            return  # transformers will report the unreadable config
        if kind is not None and kind not in self.model_types:
            raise self._cannot_load(f"config.json model_type is '{kind}', not {' or '.join(self.model_types)}")

    def _cannot_load(self, reason: str) -> Exception:
        return self._fail(f"cannot load model '{self.options['model']}' offline ({reason}): "
                          f"give a local directory in embed.{self.name}.model")

    def _from_pretrained(self, native, auto, weights: tuple[str, ...] | None = None):
        """native.from_pretrained, or the Auto class with remote code when the user allows it. For models,
        `weights` are the parameter-name prefixes the embedding uses: any of them missing from the
        checkpoint (a wrong or partial model, silently initialised at random) is refused."""
        o = self.options
        src = str(self._path) if self._path is not None else o["model"]
        cls = auto if o["trust_remote_code"] else native
        kw = {"output_loading_info": True} if weights is not None else {}
        try:
            with _quiet_transformers():
                loaded = cls.from_pretrained(src, local_files_only=o["local_files_only"],
                                             trust_remote_code=o["trust_remote_code"], **kw)
        except Exception as e:  # noqa: BLE001  OSError: offline or missing files; ValueError: wrong architecture
            if isinstance(e, OSError) and self._path is None and o["local_files_only"]:
                raise self._cannot_load("not in the local Hugging Face cache") from None
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise self._cannot_load(f"{type(e).__name__}: {first[:160]}") from None
        if weights is None:
            return loaded
        model, info = loaded
        missing = sorted(k for k in info.get("missing_keys", ()) if k.startswith(weights))
        if missing:
            raise self._cannot_load(f"checkpoint lacks {len(missing)} weights such as '{missing[0]}': "
                                    f"not a {self.name} model")
        return model

    def _load(self) -> None:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        if self._path is not None:
            cfg["fingerprint"] = _fingerprint(self._path)
        else:  # a hub id: the cached snapshot's commit, when transformers recorded it
            cfg["revision"] = getattr(self._model.config, "_commit_hash", None)
        return cfg

    def _to_device(self, model):
        return model.eval().to(self.device)


@register
class ClapEmbedder(HubEmbedder):
    """One projected, L2-normalised CLAP audio embedding per window (fadtk CLAPLaionModel: 10 s windows)."""

    name = "clap"
    defaults: ClassVar[dict[str, Any]] = {**HubEmbedder.defaults, "model": "laion/larger_clap_music",
                                          "window_s": 10.0, "hop_s": 5.0}
    model_types = ("clap",)
    batch = 8  # windows per forward pass; memory only, not the output

    def _load(self) -> None:
        from transformers import (
            AutoFeatureExtractor,
            AutoModel,
            ClapFeatureExtractor,
            ClapModel,
        )

        o = self.options
        if o["window_s"] <= 0 or o["hop_s"] <= 0:
            raise self._fail(f"window_s and hop_s must be > 0 (got {o['window_s']}, {o['hop_s']})")
        self._fe = self._from_pretrained(ClapFeatureExtractor, AutoFeatureExtractor)
        self._model = self._to_device(
            self._from_pretrained(ClapModel, AutoModel, weights=("audio_model.", "audio_projection.")))
        self.sample_rate = int(self._fe.sampling_rate)
        self.dim = int(self._model.config.projection_dim)
        self.hop_seconds = o["hop_s"]
        self.window = round(o["window_s"] * self.sample_rate)
        self.hop = max(1, round(o["hop_s"] * self.sample_rate))
        if self.window > self._fe.nb_max_samples:
            raise self._fail(f"window_s {o['window_s']:g} exceeds the model's {self._fe.max_length_s} s input")
        # Windows never exceed the input length, so neither mode crops randomly; "fusion" (the extractor's
        # default) makes 4-channel input that only a fused model accepts.
        self._truncation = "fusion" if self._model.config.audio_config.enable_fusion else "rand_trunc"

    def _starts(self, n: int) -> list[int]:
        """Window starts every hop; the last window is aligned to the end; short audio is one padded window."""
        if n <= self.window:
            return [0]
        starts = list(range(0, n - self.window + 1, self.hop))
        if starts[-1] + self.window < n:
            starts.append(n - self.window)
        return starts

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        import torch

        x = self._mono(audio, sample_rate)
        windows = [x[s:s + self.window] for s in self._starts(len(x))]
        out = []
        with torch.inference_mode():
            for i in range(0, len(windows), self.batch):
                inp = self._fe(windows[i:i + self.batch], sampling_rate=self.sample_rate, return_tensors="pt",
                               truncation=self._truncation, padding="repeatpad")
                inp = {k: v.to(self.device) for k, v in inp.items() if k in ("input_features", "is_longer")}
                out.append(self._model.get_audio_features(**inp).pooler_output.float().cpu())
        return torch.cat(out).numpy()


@register
class MertEmbedder(HubEmbedder):
    """Hidden states of one MERT layer at 75 Hz (fadtk MERTModel); layer 0 is the transformer's input."""

    name = "mert"
    defaults: ClassVar[dict[str, Any]] = {**HubEmbedder.defaults, "model": "m-a-p/MERT-v1-95M", "layer": 6}
    chunk_s = 30.0  # audio is encoded in chunks: self-attention memory grows with length squared

    def _load(self) -> None:
        from transformers import (
            AutoFeatureExtractor,
            AutoModel,
            HubertModel,
            Wav2Vec2FeatureExtractor,
        )

        self._fe = self._from_pretrained(Wav2Vec2FeatureExtractor, AutoFeatureExtractor)
        self._model = self._to_device(
            self._from_pretrained(HubertModel, AutoModel, weights=("feature_extractor.", "feature_projection.",
                                                                  "encoder.")))
        cfg = self._model.config
        layers = int(cfg.num_hidden_layers)
        if not 0 <= self.options["layer"] <= layers:
            raise self._fail(f"layer {self.options['layer']} out of range 0..{layers} for model "
                             f"'{self.options['model']}'")
        self.sample_rate = int(self._fe.sampling_rate)
        self.dim = int(cfg.hidden_size)
        stride = math.prod(cfg.conv_stride)
        self.hop_seconds = stride / self.sample_rate
        # Receptive field of the conv front end: a chunk shorter than this yields no frame.
        field, jump = 1, 1
        for k, s in zip(cfg.conv_kernel, cfg.conv_stride):
            field, jump = field + (k - 1) * jump, jump * s
        self._min_len = field

    def _chunks(self, n: int) -> list[tuple[int, int]]:
        """chunk_s pieces; a tail under one second joins the previous piece."""
        size = round(self.chunk_s * self.sample_rate)
        bounds = list(range(0, n, size))
        if len(bounds) > 1 and n - bounds[-1] < self.sample_rate:
            bounds.pop()
        return list(zip(bounds, bounds[1:] + [n]))

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        import torch

        x = self._mono(audio, sample_rate)
        if len(x) < self._min_len:
            x = np.pad(x, (0, self._min_len - len(x)))
        out = []
        with torch.inference_mode():
            for a, b in self._chunks(len(x)):
                inp = self._fe(x[a:b], sampling_rate=self.sample_rate, return_tensors="pt")
                hs = self._model(inp["input_values"].to(self.device), output_hidden_states=True).hidden_states
                out.append(hs[self.options["layer"]][0].float().cpu())
        return torch.cat(out).numpy()

    def config(self) -> dict[str, Any]:
        return {**super().config(), "chunk_s": self.chunk_s}


def save_tiny_random(name: str, directory: str | Path, seed: int = 0) -> Path:
    """Write a tiny randomly initialised CLAP or MERT-shaped model + feature extractor (no download): an
    offline stand-in that exercises the real loading and inference code in tests and benchmarks."""
    import torch
    from transformers import (
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        HubertConfig,
        HubertModel,
        Wav2Vec2FeatureExtractor,
    )

    directory = Path(directory)
    torch.manual_seed(seed)
    if name == "clap":
        cfg = ClapConfig(
            text_config={"vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                         "intermediate_size": 32, "max_position_embeddings": 40},
            audio_config={"depths": [1, 1], "num_attention_heads": [1, 2], "patch_embeds_hidden_size": 16,
                          "hidden_size": 32, "enable_fusion": False},
            projection_dim=24)
        model, fe = ClapModel(cfg), ClapFeatureExtractor()  # real front end: 48 kHz, 64 mels, 10 s
    elif name == "mert":
        cfg = HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                           conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                           feat_extract_norm="layer")
        model = HubertModel(cfg)  # MERT-v1's conv front end: 320x downsampling, 75 Hz at 24 kHz
        fe = Wav2Vec2FeatureExtractor(sampling_rate=24000, do_normalize=True, return_attention_mask=True)
    else:
        raise ValueError(f"no tiny stand-in for '{name}' (clap, mert)")
    with _quiet_transformers():
        model.save_pretrained(directory)
    fe.save_pretrained(directory)
    return directory
