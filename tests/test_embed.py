"""Embedder registry: mel and CREPE for real, CLAP and MERT through tiny random stand-ins saved to tmp."""
from __future__ import annotations

import numpy as np
import pytest

from stemsift.embed import REGISTRY, Embedder, EmbedderError, get_embedder

SR = 16000


def tone(freq: float, seconds: float = 2.0, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def noise(seconds: float = 2.0, sr: int = SR, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)


@pytest.fixture(scope="module")
def mel() -> Embedder:
    return get_embedder("mel")


@pytest.fixture(scope="module")
def crepe() -> Embedder:
    return get_embedder("crepe", {"model": "tiny"})


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> dict[str, str]:
    from stemsift.embed.hub import save_tiny_random

    root = tmp_path_factory.mktemp("tiny_models")
    return {n: str(save_tiny_random(n, root / n)) for n in ("clap", "mert")}


# --- registry ---------------------------------------------------------------------------------------

def test_registry_names():
    assert {"mel", "crepe", "clap", "mert"} <= set(REGISTRY)


def test_unknown_name_lists_available():
    with pytest.raises(EmbedderError, match=r"unknown embedder 'vggish' \(available: cdpam, clap, crepe, mel, mert"):
        get_embedder("vggish")


@pytest.mark.parametrize("opts, pattern", [
    ({"n_mel": 32}, "mel: unknown option 'n_mel'"),
    ({"n_mels": "64"}, "mel: option 'n_mels' must be int"),
    ({"n_mels": 600}, "mel: n_mels must be in 1..513"),
    ({"device": "cpu"}, "unknown option 'device'"),
])
def test_bad_options(opts, pattern):
    with pytest.raises(EmbedderError, match=pattern):
        get_embedder("mel", opts)


def test_device_checks():
    import torch

    assert get_embedder("mel", device="auto").device == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(EmbedderError, match="mel: unknown device 'gpu'"):
        get_embedder("mel", device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(EmbedderError, match="CUDA is not available"):
            get_embedder("mel", device="cuda")


# --- mel --------------------------------------------------------------------------------------------

def test_mel_shape_and_determinism(mel):
    x = noise(3.0)
    f = mel.embed(x, SR)
    assert f.dtype == np.float32 and f.shape == (1 + len(x) // 512, 64 + 3) and mel.dim == 67
    assert abs(f.shape[0] - 3.0 / mel.hop_seconds) <= 2
    assert np.isfinite(f).all()
    np.testing.assert_array_equal(f, mel.embed(x.copy(), SR))
    assert mel.config() == {"name": "mel", "version": 1, "n_mels": 64, "n_fft": 1024, "hop": 512,
                            "sample_rate": 16000, "fmin": 20.0}


def test_mel_stereo_is_mono_downmix(mel):
    stereo = np.stack([noise(seed=1), tone(330)], axis=1)
    np.testing.assert_allclose(mel.embed(stereo, SR), mel.embed(stereo.mean(axis=1), SR), atol=1e-6)


def test_mel_tone_vs_noise(mel):
    t, n = mel.embed(tone(440), SR)[2:-2], mel.embed(noise(), SR)[2:-2]
    flat, cent, log_rms = -3, -2, -1
    assert t[:, flat].max() < 0.01 and n[:, flat].min() > 0.3  # a sine is not flat; noise is
    assert t[:, cent].mean() < n[:, cent].mean() - 0.2             # noise's centroid sits near 4 kHz
    np.testing.assert_allclose(t[:, log_rms], 0.5 * np.log(0.125), atol=0.02)  # RMS of a 0.5 sine
    assert np.abs(t[:, :64].mean(0) - n[:, :64].mean(0)).mean() > 2.0


def test_mel_resamples_from_44100(mel):
    f44 = mel.embed(tone(440, sr=44100), 44100)
    f16 = mel.embed(tone(440), SR)
    assert f44.shape == f16.shape
    assert f44[:, :64].argmax(1).tolist() == f16[:, :64].argmax(1).tolist()
    np.testing.assert_allclose(f44[2:-2, -1], f16[2:-2, -1], atol=0.01)


def test_bad_audio(mel):
    with pytest.raises(EmbedderError, match="mel: audio is empty"):
        mel.embed(np.zeros(0, np.float32), SR)
    with pytest.raises(EmbedderError, match="NaN"):
        mel.embed(np.full(SR, np.nan, np.float32), SR)


# --- crepe ------------------------------------------------------------------------------------------

def test_crepe_tiny_shape_and_tones(crepe):
    a, b = crepe.embed(tone(220), SR), crepe.embed(tone(880), SR)
    assert a.shape == (1 + 2 * SR // 320, 256) and a.dtype == np.float32 and np.isfinite(a).all()
    assert crepe.dim == 256 and crepe.hop_seconds == pytest.approx(0.02)
    np.testing.assert_array_equal(a, crepe.embed(tone(220), SR))
    assert np.abs(a - b).mean() > 0.1 * np.abs(a).mean()


def test_crepe_weights_are_pretrained(crepe):
    """The loaded network's own pitch head finds 440 Hz: random weights would not."""
    import torch
    import torchcrepe

    frames = next(torchcrepe.preprocess(torch.from_numpy(tone(440))[None], SR, 320, 64, "cpu"))
    with torch.inference_mode():
        bins = crepe._model(frames[5:10]).argmax(1)
    hz = torchcrepe.convert.bins_to_frequency(bins.float())
    np.testing.assert_allclose(hz.numpy(), 440, rtol=0.03)


def test_crepe_fast_forward_matches_torchcrepe(crepe):
    import torch
    import torchcrepe

    frames = next(torchcrepe.preprocess(torch.from_numpy(noise(0.5))[None], SR, 320, 16, "cpu"))
    with torch.inference_mode():
        ref = crepe._model.embed(frames).reshape(len(frames), -1)
        np.testing.assert_allclose(crepe._forward(frames).numpy(), ref.numpy(), atol=1e-4)


def test_crepe_bad_model():
    with pytest.raises(EmbedderError, match="crepe: model must be one of tiny, full"):
        get_embedder("crepe", {"model": "small"})


# --- clap / mert (tiny random stand-ins: no weights can be downloaded here) -------------------------

def test_clap_tiny(tiny_dirs):
    e = get_embedder("clap", {"model": tiny_dirs["clap"]})
    assert e.sample_rate == 48000 and e.dim == 24 and e.hop_seconds == 5.0
    x = noise(3.0)
    f = e.embed(x, SR)
    assert f.shape == (1, 24) and f.dtype == np.float32 and np.isfinite(f).all()
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, rtol=1e-5)  # get_audio_features normalises
    np.testing.assert_array_equal(f, e.embed(x, SR))  # no random crop
    cfg = e.config()
    assert cfg["model"] == tiny_dirs["clap"] and cfg["window_s"] == 10.0 and len(cfg["fingerprint"]) == 16


def test_clap_windows(tiny_dirs):
    # 3 s, 2 s windows every 0.75 s: starts 0, 0.75 and one aligned to the end (1.0).
    e = get_embedder("clap", {"model": tiny_dirs["clap"], "window_s": 2.0, "hop_s": 0.75})
    assert e.embed(noise(3.0), SR).shape == (3, 24)
    with pytest.raises(EmbedderError, match="window_s 12 exceeds the model's 10 s input"):
        get_embedder("clap", {"model": tiny_dirs["clap"], "window_s": 12.0})


def test_mert_tiny(tiny_dirs):
    e = get_embedder("mert", {"model": tiny_dirs["mert"], "layer": 2})
    assert e.sample_rate == 24000 and e.dim == 32 and e.hop_seconds == pytest.approx(1 / 75)
    x = np.stack([noise(3.0), noise(3.0, seed=1)], axis=1)
    f = e.embed(x, SR)
    assert f.dtype == np.float32 and f.shape[1] == 32 and abs(f.shape[0] - 3.0 * 75) <= 2
    assert np.isfinite(f).all()
    assert not np.allclose(f, get_embedder("mert", {"model": tiny_dirs["mert"], "layer": 1}).embed(x, SR))
    assert e.config()["model"] == tiny_dirs["mert"] and e.config()["layer"] == 2
    # Long audio goes in 30 s chunks; a tail under 1 s joins the previous chunk.
    assert e._chunks(int(60.5 * 24000)) == [(0, 720000), (720000, 1452000)]
    assert e._chunks(int(61.5 * 24000)) == [(0, 720000), (720000, 1440000), (1440000, 1476000)]
    with pytest.raises(EmbedderError, match=r"mert: layer 3 out of range 0..2"):
        get_embedder("mert", {"model": tiny_dirs["mert"], "layer": 3})


def test_clap_checkpoint_without_audio_weights_is_refused(tiny_dirs, tmp_path):
    """A clap config whose weights lack the audio tower would otherwise run on random weights."""
    import shutil

    from safetensors.torch import load_file, save_file

    src, dst = tiny_dirs["clap"], tmp_path / "text_only"
    shutil.copytree(src, dst)
    weights = {k: v for k, v in load_file(dst / "model.safetensors").items() if not k.startswith("audio_")}
    save_file(weights, dst / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(EmbedderError, match=r"checkpoint lacks \d+ weights such as 'audio_.*not a clap model"):
        get_embedder("clap", {"model": str(dst)})


@pytest.mark.parametrize("name", ["clap", "mert"])
def test_hub_offline_failures(name, tmp_path, tiny_dirs):
    missing = str(tmp_path / "no_such_model")
    with pytest.raises(EmbedderError) as err:
        get_embedder(name, {"model": missing})
    msg = str(err.value)
    assert msg == (f"{name}: cannot load model '{missing}' offline (no such directory): "
                   f"give a local directory in embed.{name}.model")
    with pytest.raises(EmbedderError, match="not in the local Hugging Face cache"):
        get_embedder(name, {"model": "stemsift-test/no-such-model"})
    other = tiny_dirs["mert" if name == "clap" else "clap"]  # the other architecture is refused
    why = "config.json model_type is 'hubert', not clap" if name == "clap" else "ValueError: embed_dim"
    with pytest.raises(EmbedderError, match=f"{name}: cannot load model '{other}' offline \\({why}") as err:
        get_embedder(name, {"model": other})
    assert "\n" not in str(err.value)
