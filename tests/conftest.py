"""Small generated audio for tests: distinct band-limited content per label, never stored fixtures."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from stemsift import LABELS

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` / `make smoke` run 2 workers on 2 cores: one torch thread each, stages too
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    torch.set_num_threads(1)

# A different frequency band per label so label swaps and leaks are measurable.
BANDS = {"vocals": (300, 1200), "bass": (40, 200), "drums": (2000, 6000), "other": (800, 3000)}


def band_noise(rng: np.random.Generator, frames: int, channels: int, sr: int, band: tuple[float, float],
               level: float = 0.1) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal((frames, channels)), axis=0)
    f = np.fft.rfftfreq(frames, 1 / sr)
    spec[(f < band[0]) | (f > band[1])] = 0
    x = np.fft.irfft(spec, n=frames, axis=0)
    return (level * x / (np.max(np.abs(x)) + 1e-12)).astype(np.float32)


NO_AVX512 = "X86_V4 AVX512_ICL AVX512_SPR"  # NPY_DISABLE_CPU_FEATURES: numpy's AVX-512 dispatch targets off


def has_avx512() -> bool:
    """numpy has AVX-512 paths on this CPU (so switching them off can change a result)."""
    from numpy._core._multiarray_umath import __cpu_features__
    return bool(__cpu_features__.get("X86_V4") or __cpu_features__.get("AVX512F"))


def stdout_with_and_without_avx512(code: str, *args: str) -> tuple[str, str]:
    """``python -c code *args`` run twice in subprocesses: numpy's AVX-512 paths on, then off; both stdouts."""
    import subprocess
    import sys

    run = lambda env: subprocess.run([sys.executable, "-c", code, *args], env={**os.environ, **env},  # noqa: E731
                                     capture_output=True, text=True, check=True).stdout.strip()
    return run({}), run({"NPY_DISABLE_CPU_FEATURES": NO_AVX512})


def make_stems(seed: int = 0, seconds: float = 1.0, sr: int = 8000, channels: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    frames = int(seconds * sr)
    return {lb: band_noise(rng, frames, channels, sr, BANDS[lb], level=0.1 + 0.05 * i) for i, lb in enumerate(LABELS)}


def write_input_track(folder: Path, stems: dict[str, np.ndarray], sr: int, ext: str = "wav",
                      subtype: str = "PCM_16") -> Path:
    """A MUSDB18-HQ-style track folder (what a user would point `data.source` at)."""
    folder.mkdir(parents=True, exist_ok=True)
    for label, x in stems.items():
        sf.write(str(folder / f"{label}.{ext}"), x, sr, subtype=subtype)
    return folder


@pytest.fixture
def input_folder(tmp_path: Path) -> Path:
    """train: 3 tracks, test: 2 tracks at 11025 Hz (so ingest must resample to the set's rate)."""
    root = tmp_path / "musdb"
    for i in range(5):
        split = "train" if i < 3 else "test"
        write_input_track(root / split / f"Artist {i} - Song", make_stems(i, sr=11025), 11025)
    return root


E2E_FIRST = ("test_pipeline.py", "test_evidence.py")  # ~4.4 and ~1.3 min on one core


def pytest_collection_modifyitems(config, items):
    """`cuda` tests need a CUDA device: where torch sees none they are skipped, and the summary (-ra) says why.
    The two end-to-end files are collected first: `make smoke` (xdist, loadfile, no reorder) hands files out in this
    order, so each worker starts one of the two longest at once and the remaining files fill in behind them."""
    items[:] = sorted(items, key=lambda it: Path(str(it.fspath)).name not in E2E_FIRST)
    if os.environ.get("STEMSIFT_TEST_DEVICE", "cuda").startswith("cuda") and not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="cuda: no CUDA device visible to torch (torch.cuda.is_available() is False); "
                                       "run them where one is, or with STEMSIFT_TEST_DEVICE=cpu to check the tests")
        for item in items:
            if "cuda" in item.keywords:
                item.add_marker(skip)
