"""The `cdpam` embedder with the real CDPAM weights from the installed wheel (Manocha et al. 2021): a reverberated
copy of a stem lies farther from a dry excerpt than the dry copy does. About 8 s of audio through the encoder."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from stemsift.embed import EmbedderError, get_embedder

pytestmark = pytest.mark.skipif(importlib.util.find_spec("cdpam") is None,
                                reason="cdpam not installed (make setup installs cdpam==0.0.6)")
SR = 16000


def plucked_line(seconds: float, seed: int, sr: int = SR) -> np.ndarray:
    """A bass-like stem: harmonic notes with exponential decay, pitches from a seeded walk on a scale."""
    rng = np.random.default_rng(seed)
    note = int(0.25 * sr)
    t = np.arange(note) / sr
    scale = [0, 2, 3, 5, 7, 8, 10, 12]
    out = []
    for _ in range(int(seconds * sr) // note):
        f0 = 110.0 * 2 ** (scale[rng.integers(len(scale))] / 12)
        partials = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 8))
        out.append(partials * np.exp(-t * 12.0))
    x = np.concatenate(out)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def reverb(x: np.ndarray) -> np.ndarray:
    """The `effects` preset's pedalboard reverb, brought back to the dry stem's RMS (level is not the cue)."""
    import pedalboard

    wet = pedalboard.Reverb(room_size=0.8, damping=0.8, wet_level=0.5, dry_level=0.4)(x[None], SR)[0]
    return (wet * np.sqrt(np.mean(x ** 2) / np.mean(wet ** 2))).astype(np.float32)


@pytest.fixture(scope="module")
def cdpam():
    return get_embedder("cdpam")


def test_reverb_is_farther_than_a_second_dry_excerpt(cdpam):
    """Reference: the stem's first 2 s. The second 2 s dry, and the same 2 s reverberated (level-matched): same
    notes, so only the reverb separates them; its mean embedding must lie farther from the reference (measured:
    3.8x as far here, 2.5x for seed 3)."""
    stem = plucked_line(4.0, 1)
    ref, later = stem[: 2 * SR], stem[2 * SR:]
    emb = {k: cdpam.embed(v, SR) for k, v in [("ref", ref), ("dry", later), ("wet", reverb(later))]}
    assert cdpam.sample_rate == 22050 and cdpam.dim == 512 and cdpam.hop_seconds == pytest.approx(0.1)
    for e in emb.values():  # 2 windows x 10 blocks of 0.1 s, content half
        assert e.shape == (20, 512) and e.dtype == np.float32 and np.isfinite(e).all()
    mu = {k: e.mean(0) for k, e in emb.items()}
    d_dry = np.linalg.norm(mu["dry"] - mu["ref"])
    d_wet = np.linalg.norm(mu["wet"] - mu["ref"])
    assert d_wet > 1.5 * d_dry, (d_dry, d_wet)


def test_deterministic_and_blocks_differ():
    emb = get_embedder("cdpam", {"window_s": 0.5})
    x = plucked_line(2.0, 0)
    a = emb.embed(x, SR)
    assert a.shape == (10, 512)
    np.testing.assert_array_equal(a, emb.embed(x, SR))
    assert a.std(0).mean() > 0.01 * np.abs(a).mean()  # blocks differ: not one time-averaged vector repeated


def test_one_block_is_cdpams_own_encoder_output():
    """One window, one block, both halves: the frame equals base_encoder.forward's time-averaged (acoustic,
    content) features, so the un-pooled map and the last layer cut to the kept channels are the original net."""
    import torch

    emb = get_embedder("cdpam", {"windows": 1, "window_s": 0.5, "block_s": 0.5, "half": "both"})
    x = np.resize(plucked_line(0.5, 2, sr=emb.sample_rate), emb.window)  # exactly one window long
    with torch.inference_mode():
        _, acoustic, content = emb._encoder(torch.from_numpy(np.round(x * 32768.0))[None, None])
    want = torch.cat([acoustic, content], 1)[0].numpy()
    got = emb.embed(x, emb.sample_rate)
    assert got.shape == (1, 1024)
    np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_windows_sit_on_the_active_part():
    """Silence around a short phrase: both windows land inside it, whatever the stem's level."""
    emb = get_embedder("cdpam", {"half": "both", "windows": 2})
    x = np.zeros(10 * emb.sample_rate, dtype=np.float32)
    x[6 * emb.sample_rate: 8 * emb.sample_rate] = 0.1
    for gain in (1.0, 0.01):
        starts = emb._starts(gain * x)
        assert all(5.9 * emb.sample_rate <= s and s + emb.window <= 8.1 * emb.sample_rate for s in starts), starts
        assert starts[0] < starts[1]
    assert emb.dim == 1024


@pytest.mark.parametrize("opts, pattern", [
    ({"half": "timbre"}, "cdpam: half must be one of acoustic, content, both"),
    ({"windows": 0}, "cdpam: windows must be >= 1"),
    ({"block_s": 2.0}, "cdpam: need 0.01 <= block_s <= window_s"),
    ({"window_s": "1"}, "cdpam: option 'window_s' must be float"),
])
def test_bad_options(opts, pattern):
    with pytest.raises(EmbedderError, match=pattern):
        get_embedder("cdpam", opts)
