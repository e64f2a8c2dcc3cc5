"""Audio I/O with soundfile (torchaudio.load/save need torchcodec + FFmpeg libs in 2.9) and resampling."""
from __future__ import annotations

import hashlib
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

# FLAC/WAV subtype used for every stem we write: 16-bit PCM keeps sets small and sums exact.
PCM_SUBTYPE = "PCM_16"
PCM_SCALE = 32768.0


class AudioError(ValueError):
    """An audio file that cannot be used; the message is one line naming the file and the fault."""


def read_audio(path: str | Path, dtype: str = "float32") -> tuple[np.ndarray, int]:
    """Read a file as (frames, channels) and its sample rate; raise AudioError with one clear line."""
    path = Path(path)
    try:
        data, sr = sf.read(str(path), dtype=dtype, always_2d=True)
    except sf.LibsndfileError as e:  # corrupt, truncated, or not audio at all
        raise AudioError(f"{path}: unreadable audio ({str(e).splitlines()[0].strip()})") from None
    except RuntimeError as e:
        raise AudioError(f"{path}: unreadable audio ({e})") from None
    return data, sr


def wav_truncation(path: str | Path) -> str | None:
    """For RIFF/WAVE files, compare the data chunk's declared size with the bytes present (libsndfile
    silently reads what is there); return a description of the shortfall, or None."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            cid, n = f.read(4), int.from_bytes(f.read(4), "little")
            if cid == b"data":
                have = size - pos - 8
                return None if have >= n else f"truncated audio ({have} of {n} data bytes present)"
            pos += 8 + n + (n & 1)
    return "truncated audio (no data chunk)"


def audio_info(path: str | Path) -> sf._SoundFileInfo:
    try:
        return sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"{path}: unreadable audio ({str(e).splitlines()[0].strip()})") from None


def quantize(x: np.ndarray) -> np.ndarray:
    """Float audio -> the exact float values that 16-bit PCM will store (so sums stay exact)."""
    q = np.clip(np.round(np.asarray(x, dtype=np.float64) * PCM_SCALE), -PCM_SCALE, PCM_SCALE - 1)
    return (q / PCM_SCALE).astype(np.float32)


def write_audio(path: str | Path, x: np.ndarray, sample_rate: int) -> None:
    """Write (frames, channels) float audio as 16-bit PCM; the format follows the extension."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[:, None]
    if not np.all(np.isfinite(x)):
        raise AudioError(f"{path}: refusing to write NaN/Inf samples")
    if np.max(np.abs(x), initial=0.0) > 1.0:
        raise AudioError(f"{path}: samples exceed full scale (peak {np.max(np.abs(x)):.3f}); scale first")
    sf.write(str(path), quantize(x), sample_rate, subtype=PCM_SUBTYPE)


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Polyphase resampling along frames (axis 0); identity when the rates match."""
    if sr_in == sr_out:
        return x
    g = gcd(int(sr_in), int(sr_out))
    return resample_poly(x, sr_out // g, sr_in // g, axis=0).astype(np.float32)


def match_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """Mono <-> stereo by duplication or averaging; other layouts are refused by the caller."""
    if x.shape[1] == channels:
        return x
    if x.shape[1] == 1:
        return np.repeat(x, channels, axis=1)
    if channels == 1:
        return x.mean(axis=1, keepdims=True)
    raise AudioError(f"cannot map {x.shape[1]} channels to {channels}")


def sha1_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def rms_db(x: np.ndarray) -> float:
    """RMS level in dBFS (-inf for digital silence)."""
    e = float(np.mean(np.square(x, dtype=np.float64))) if x.size else 0.0
    return 10 * np.log10(e) if e > 0 else float("-inf")


def active_rms(x: np.ndarray, sr: int, block_s: float = 0.1, floor_db: float = -20.0) -> float:
    """RMS over the blocks where the signal plays (block energy within ``floor_db`` of the loudest block), so a
    sparse stem's level is the level it plays at: the level a mixing engineer matches in an A/B. 0 for silence."""
    x = np.asarray(x)
    x = x[:, None] if x.ndim == 1 else x
    hop = max(1, int(sr * block_s))
    m = len(x) // hop * hop
    if m == 0:  # shorter than one block: the whole signal is the block
        e = np.array([float(np.mean(np.square(x, dtype=np.float64)))]) if x.size else np.zeros(1)
    else:
        e = np.mean(np.square(x[:m].reshape(-1, hop * x.shape[1]), dtype=np.float64), axis=1)
    top = float(e.max())
    return float(np.sqrt(e[e > top * 10 ** (floor_db / 10)].mean())) if top > 0 else 0.0
