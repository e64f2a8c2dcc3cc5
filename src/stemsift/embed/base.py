"""Embedder interface and registry (the ModelLoader pattern of fadtk, Gui et al. 2024, arXiv:2311.01616)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np


class EmbedderError(ValueError):
    """A model or option that cannot be used; the message is one line naming the embedder and the fault."""


class Embedder(ABC):
    """Audio -> (n_frames, dim) float32 frame embeddings at the model's own sample rate."""

    name: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}
    # Bump when the computation changes so cached embeddings keyed on config() are not reused.
    version: ClassVar[int] = 1

    sample_rate: int
    dim: int
    hop_seconds: float

    def __init__(self, device: str = "cpu", **options: Any) -> None:
        self.device = self._check_device(device)
        self.options = self._check_options(options)

    def _check_device(self, device: str) -> str:
        """'cpu', 'cuda[:n]' or 'auto' (cuda when available); a missing GPU is an error, not a silent fallback."""
        if device == "cpu":
            return device
        import torch

        if device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        try:
            kind = torch.device(device).type
        except (RuntimeError, TypeError):
            raise EmbedderError(f"{self.name}: unknown device '{device}' (cpu, cuda, auto)") from None
        if kind == "cuda" and not torch.cuda.is_available():
            raise EmbedderError(f"{self.name}: device '{device}' requested but CUDA is not available")
        return device

    def _check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Defaults overlaid with the given params block; unknown keys and wrong types are refused."""
        out = dict(self.defaults)
        for key, value in options.items():
            if key not in self.defaults:
                known = ", ".join(sorted(self.defaults)) or "none"
                raise EmbedderError(f"{self.name}: unknown option '{key}' (known: {known})")
            want = self.defaults[key]
            if isinstance(want, bool) or isinstance(value, bool):
                ok = isinstance(value, bool) and isinstance(want, bool)
            elif isinstance(want, float):
                ok = isinstance(value, (int, float))
                value = float(value) if ok else value
            else:
                ok = isinstance(value, type(want))
            if not ok:
                raise EmbedderError(f"{self.name}: option '{key}' must be {type(want).__name__}, got {value!r}")
            out[key] = value
        return out

    def _fail(self, message: str) -> EmbedderError:
        return EmbedderError(f"{self.name}: {message}")

    def _mono(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """(samples,) or (samples, channels) at any rate -> mono float32 at self.sample_rate."""
        from stemsift.audio import resample

        x = np.asarray(audio, dtype=np.float32)
        if x.ndim == 2:
            x = x.mean(axis=1, dtype=np.float32)
        elif x.ndim != 1:
            raise self._fail(f"audio must be (samples,) or (samples, channels), got shape {x.shape}")
        if x.size == 0:
            raise self._fail("audio is empty")
        if not np.all(np.isfinite(x)):
            raise self._fail("audio contains NaN/Inf samples")
        return np.ascontiguousarray(resample(x, int(sample_rate), int(self.sample_rate)), dtype=np.float32)

    @abstractmethod
    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """float32 (n_frames, dim); n_frames >= 1 for audio of at least one second."""

    def config(self) -> dict[str, Any]:
        """Everything that determines the output (name, version, options, model identity): a cache key."""
        return {"name": self.name, "version": self.version, **self.options}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options}, device={self.device!r})"


REGISTRY: dict[str, type[Embedder]] = {}


def register(cls: type[Embedder]) -> type[Embedder]:
    """Class decorator: make an embedder available to get_embedder under cls.name."""
    other = REGISTRY.get(cls.name)
    if other is not None and other.__qualname__ != cls.__qualname__:
        raise ValueError(f"embedder name '{cls.name}' already registered by {other.__qualname__}")
    REGISTRY[cls.name] = cls
    return cls


def get_embedder(name: str, options: dict | None = None, device: str = "cpu") -> Embedder:
    """Build the named embedder from its params block (None = all defaults)."""
    cls = REGISTRY.get(name)
    if cls is None:
        raise EmbedderError(f"unknown embedder '{name}' (available: {', '.join(sorted(REGISTRY))})")
    opts = dict(options or {})
    if "device" in opts:  # the device is a run-time choice, not part of the params block
        raise EmbedderError(f"{name}: unknown option 'device' (pass device= to get_embedder)")
    return cls(device, **opts)
