"""Generic audio processing chains: the synthetic degradations the `degrade` cleaner learns to tell from clean audio.

The synthetic-anomaly recipe (CutPaste, Li et al. CVPR 2021) carried to audio: clean segments are positives, the
same segments through a random chain of generic processing are negatives; Koo et al. (ISMIR 2023) train their
instrument classifier with effect augmentation of the same kind. Processing is grouped in *families* (filter,
reverb, echo, saturation, dynamics, codec, modulation, noise), each with several *members*, so a detector can be
trained with one member left out (near held-out: its relatives stay) or a whole family left out (strict held-out).

Every member draws its own settings from a Generator (``draw``) and applies them to a mono float64 signal whose
peak is 1 (``apply``); settings are plain dicts, so the chains a detector was trained on can be inspected.
Levels relative to full scale (drive, thresholds, bit depths) are therefore relative to the segment's peak, and
:func:`apply_chain` brings the output back to the input's RMS (the simulator level-matches processed stems too).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.signal import butter, fftconvolve, resample_poly, sosfilt

Settings = dict


@dataclass(frozen=True)
class Member:
    name: str
    family: str
    draw: Callable[[np.random.Generator, int], Settings]
    apply: Callable[[np.ndarray, int, Settings], np.ndarray]


def _logu(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _cap(f: float, sr: int) -> float:
    return float(min(f, 0.45 * sr))


def _board(plugin, x: np.ndarray, sr: int) -> np.ndarray:
    """One pedalboard plugin over a mono signal (pedalboard wants float32 (channels, frames))."""
    y = plugin(np.ascontiguousarray(x[None, :], dtype=np.float32), float(sr), reset=True)
    y = np.asarray(y, dtype=np.float64)[0]
    return y[: len(x)] if len(y) >= len(x) else np.pad(y, (0, len(x) - len(y)))


def _pb():
    import pedalboard  # lazily: only training needs it

    return pedalboard


def _sos(x: np.ndarray, order: int, freq, btype: str, sr: int) -> np.ndarray:
    return sosfilt(butter(order, freq, btype=btype, fs=sr, output="sos"), x)


# ------------------------------------------------------------------------------------------------ filter

def _lp_first_draw(rng, sr):
    return {"cutoff_hz": _logu(rng, 800.0, _cap(7000.0, sr))}


def _lp_first(x, sr, s):  # JUCE's first-order low-pass (6 dB/octave), the class of the `effects` preset
    return _board(_pb().LowpassFilter(cutoff_frequency_hz=s["cutoff_hz"]), x, sr)


def _lp_draw(rng, sr):
    return {"order": int(rng.integers(2, 9)), "cutoff_hz": _logu(rng, 800.0, _cap(7000.0, sr))}


def _hp_draw(rng, sr):
    return {"order": int(rng.integers(1, 5)), "cutoff_hz": _logu(rng, 80.0, 1000.0)}


def _bp_draw(rng, sr):
    return {"order": int(rng.integers(1, 4)), "low_hz": _logu(rng, 80.0, 600.0), "high_hz": _logu(rng, 1500.0, _cap(6000.0, sr))}


def _shelf_draw(rng, sr, lo, hi):
    return {"cutoff_hz": _logu(rng, lo, _cap(hi, sr)), "gain_db": float(rng.uniform(-30.0, -6.0)),
            "q": float(rng.uniform(0.5, 1.0))}


def _peak_draw(rng, sr):
    return {"cutoff_hz": _logu(rng, 150.0, _cap(5000.0, sr)), "gain_db": float(rng.choice([-1, 1]) * rng.uniform(6, 18)),
            "q": _logu(rng, 0.5, 4.0)}


# ------------------------------------------------------------------------------------------------ reverb

def _mix(x, wet, s):
    wet = wet[: len(x)]
    wet = wet * np.sqrt(np.mean(x ** 2) / (np.mean(wet ** 2) + 1e-20))  # the wet share is set by wet_db alone
    return x + 10 ** (s["wet_db"] / 20) * wet


def _pb_reverb_draw(rng, sr):
    return {"room_size": float(rng.uniform(0.1, 1.0)), "damping": float(rng.uniform(0.0, 1.0)),
            "wet_level": float(rng.uniform(0.1, 0.8)), "dry_level": float(rng.uniform(0.2, 1.0)),
            "width": float(rng.uniform(0.0, 1.0))}


def _pb_reverb(x, sr, s):  # Freeverb (JUCE's Reverb)
    return _board(_pb().Reverb(**s), x, sr)


def _noise_ir_draw(rng, sr):
    return {"rt60_s": _logu(rng, 0.15, 3.0), "hf_ratio": float(rng.uniform(0.2, 1.0)), "predelay_ms": float(rng.uniform(0, 40)),
            "wet_db": float(rng.uniform(-12.0, 6.0)), "seed": int(rng.integers(2 ** 31))}


def _noise_ir(x, sr, s):
    """Convolution with exponentially decaying noise: a late field whose highs die hf_ratio times sooner."""
    rng = np.random.default_rng(s["seed"])
    n = int(min(1.2 * s["rt60_s"], 2.5) * sr)
    t = np.arange(n) / sr
    noise = rng.standard_normal(n)
    high = _sos(noise, 2, _cap(2000.0, sr), "highpass", sr)
    low = noise - high
    ir = low * np.exp(-6.91 * t / s["rt60_s"]) + high * np.exp(-6.91 * t / (s["rt60_s"] * s["hf_ratio"]))
    ir = np.concatenate([np.zeros(int(s["predelay_ms"] * sr / 1000)), ir])
    return _mix(x, fftconvolve(x, ir), s)


def _schroeder_draw(rng, sr):
    return {"rt60_s": _logu(rng, 0.2, 3.0), "combs_ms": sorted(float(v) for v in rng.uniform(22, 48, 4)),
            "allpass_ms": [float(rng.uniform(4, 7)), float(rng.uniform(1, 2.5))], "allpass_g": float(rng.uniform(0.5, 0.75)),
            "wet_db": float(rng.uniform(-12.0, 6.0))}


def _schroeder(x, sr, s):
    """Schroeder's parallel combs into series all-passes (1962), built as one sparse impulse response."""
    n = int(min(1.2 * s["rt60_s"], 2.5) * sr)
    ir = np.zeros(n)
    for ms in s["combs_ms"]:
        d = max(1, int(ms * sr / 1000))
        k = np.arange(n // d)
        ir[k * d] += 10 ** (-3 * k * d / (s["rt60_s"] * sr))
    for ms in s["allpass_ms"]:
        d, g = max(1, int(ms * sr / 1000)), s["allpass_g"]
        ap = np.zeros(n)
        ap[0] = -g
        k = np.arange(1, n // d)
        ap[k * d] = (1 - g * g) * g ** (k - 1)
        ir = fftconvolve(ir, ap)[:n]
    return _mix(x, fftconvolve(x, ir), s)


# -------------------------------------------------------------------------------------------------- echo

def _pb_delay_draw(rng, sr):
    return {"delay_seconds": _logu(rng, 0.06, 0.5), "feedback": float(rng.uniform(0.0, 0.6)), "mix": float(rng.uniform(0.15, 0.5))}


def _pb_delay(x, sr, s):
    return _board(_pb().Delay(**s), x, sr)


def _slapback_draw(rng, sr):
    return {"delay_ms": _logu(rng, 20.0, 150.0), "gain": float(rng.uniform(0.3, 0.9))}


def _slapback(x, sr, s):
    d = int(s["delay_ms"] * sr / 1000)
    y = x.copy()
    y[d:] += s["gain"] * x[: len(x) - d]
    return y


# -------------------------------------------------------------------------------------------- saturation

def _drive_draw(rng, sr):
    return {"drive_db": float(rng.uniform(3.0, 36.0))}


def _pb_distortion(x, sr, s):  # tanh waveshaping (pedalboard's Distortion)
    return _board(_pb().Distortion(drive_db=s["drive_db"]), x, sr)


def _hard_clip_draw(rng, sr):
    return {"threshold_db": float(rng.uniform(-24.0, -2.0))}


def _hard_clip(x, sr, s):
    t = 10 ** (s["threshold_db"] / 20)
    return np.clip(x, -t, t)


def _cubic(x, sr, s):
    """Cubic soft clipper: 1.5 u - 0.5 u^3 on the driven signal, flat beyond |u| = 1."""
    u = np.clip(x * 10 ** (s["drive_db"] / 20), -1, 1)
    return 1.5 * u - 0.5 * u ** 3


def _tube_draw(rng, sr):
    return {"drive_db": float(rng.uniform(3.0, 30.0)), "bias": float(rng.uniform(0.1, 0.5))}


def _tube(x, sr, s):
    """Asymmetric (even-harmonic) saturation: an exponential knee on one polarity only, DC removed."""
    u = x * 10 ** (s["drive_db"] / 20) + s["bias"]
    y = np.where(u > 0, 1 - np.exp(-u), u / (1 - u))  # hard knee above, soft rational knee below
    y = y - (1 - np.exp(-s["bias"]))
    return y - y.mean()


# ---------------------------------------------------------------------------------------------- dynamics

def _comp_draw(rng, sr):
    return {"threshold_db": float(rng.uniform(-40.0, -10.0)), "ratio": _logu(rng, 2.0, 20.0),
            "attack_ms": _logu(rng, 0.5, 30.0), "release_ms": _logu(rng, 30.0, 400.0)}


def _compressor(x, sr, s):
    return _board(_pb().Compressor(**s), x, sr)


def _limiter_draw(rng, sr):
    return {"threshold_db": float(rng.uniform(-20.0, -3.0)), "release_ms": _logu(rng, 20.0, 300.0)}


def _limiter(x, sr, s):
    return _board(_pb().Limiter(**s), x, sr)


def _gate_draw(rng, sr):
    return {"threshold_db": float(rng.uniform(-40.0, -15.0)), "ratio": _logu(rng, 2.0, 20.0),
            "attack_ms": _logu(rng, 0.5, 10.0), "release_ms": _logu(rng, 20.0, 200.0)}


def _gate(x, sr, s):
    return _board(_pb().NoiseGate(**s), x, sr)


# ------------------------------------------------------------------------------------------------- codec

def _mulaw_draw(rng, sr):
    return {"bits": int(rng.integers(4, 9))}


def _mulaw(x, sr, s):
    mu = 255.0
    c = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    q = np.round(c * (2 ** (s["bits"] - 1))) / 2 ** (s["bits"] - 1)
    return np.sign(q) * np.expm1(np.abs(q) * np.log1p(mu)) / mu


def _quant_draw(rng, sr):
    return {"bits": int(rng.integers(3, 9))}


def _quantise(x, sr, s):
    step = 2.0 ** (1 - s["bits"])
    return np.round(x / step) * step


def _resample_draw(rng, sr):
    return {"factor": int(rng.choice([2, 3, 4]))}


def _resample(x, sr, s):
    """Down-sampling by an integer factor (anti-aliasing filter included) and back up."""
    f = int(s["factor"])
    return resample_poly(resample_poly(x, 1, f), f, 1)[: len(x)]


def _mp3_draw(rng, sr):
    return {"vbr_quality": float(rng.uniform(5.0, 9.5))}


def _mp3(x, sr, s):
    return _board(_pb().MP3Compressor(vbr_quality=s["vbr_quality"]), x, sr)


# -------------------------------------------------------------------------------------------- modulation

def _chorus_draw(rng, sr):
    return {"rate_hz": _logu(rng, 0.2, 5.0), "depth": float(rng.uniform(0.1, 0.9)), "centre_delay_ms": float(rng.uniform(5, 25)),
            "feedback": float(rng.uniform(0.0, 0.3)), "mix": float(rng.uniform(0.3, 0.7))}


def _flanger_draw(rng, sr):
    return {"rate_hz": _logu(rng, 0.1, 2.0), "depth": float(rng.uniform(0.2, 0.9)), "centre_delay_ms": float(rng.uniform(0.5, 4)),
            "feedback": float(rng.uniform(0.2, 0.7)), "mix": float(rng.uniform(0.3, 0.6))}


def _chorus(x, sr, s):
    return _board(_pb().Chorus(**s), x, sr)


def _phaser_draw(rng, sr):
    return {"rate_hz": _logu(rng, 0.1, 4.0), "depth": float(rng.uniform(0.3, 1.0)),
            "centre_frequency_hz": _logu(rng, 300.0, _cap(3000.0, sr)), "feedback": float(rng.uniform(0.0, 0.7)),
            "mix": float(rng.uniform(0.3, 0.7))}


def _phaser(x, sr, s):
    return _board(_pb().Phaser(**s), x, sr)


def _tremolo_draw(rng, sr):
    return {"rate_hz": _logu(rng, 2.0, 12.0), "depth": float(rng.uniform(0.3, 0.9))}


def _tremolo(x, sr, s):
    return x * (1 - s["depth"] / 2 * (1 + np.sin(2 * np.pi * s["rate_hz"] * np.arange(len(x)) / sr)))


# ------------------------------------------------------------------------------------------------- noise

def _noise_draw(rng, sr):
    return {"snr_db": float(rng.uniform(5.0, 40.0)), "slope": float(rng.choice([0.0, 1.0, 2.0])), "seed": int(rng.integers(2 ** 31))}


def _coloured_noise(x, sr, s):
    """White (slope 0), pink (1) or brown (2) noise at snr_db below the signal."""
    rng = np.random.default_rng(s["seed"])
    spec = np.fft.rfft(rng.standard_normal(len(x)))
    f = np.fft.rfftfreq(len(x), 1 / sr)
    spec *= 1 / np.maximum(f, 20.0) ** (s["slope"] / 2)
    n = np.fft.irfft(spec, len(x))
    return x + n * np.sqrt(np.mean(x ** 2) / (np.mean(n ** 2) + 1e-20)) * 10 ** (-s["snr_db"] / 20)


def _hum_draw(rng, sr):
    return {"f0_hz": float(rng.choice([50.0, 60.0])), "harmonics": int(rng.integers(1, 8)), "snr_db": float(rng.uniform(10.0, 40.0))}


def _hum(x, sr, s):
    t = np.arange(len(x)) / sr
    h = sum(np.sin(2 * np.pi * s["f0_hz"] * k * t + k) / k for k in range(1, s["harmonics"] + 1))
    return x + h * np.sqrt(np.mean(x ** 2) / np.mean(h ** 2)) * 10 ** (-s["snr_db"] / 20)


MEMBERS: dict[str, Member] = {m.name: m for m in [
    Member("pedalboard_lowpass", "filter", _lp_first_draw, _lp_first),
    Member("butter_lowpass", "filter", _lp_draw, lambda x, sr, s: _sos(x, s["order"], s["cutoff_hz"], "lowpass", sr)),
    Member("highpass", "filter", _hp_draw, lambda x, sr, s: _sos(x, s["order"], s["cutoff_hz"], "highpass", sr)),
    Member("bandpass", "filter", _bp_draw, lambda x, sr, s: _sos(x, s["order"], [s["low_hz"], s["high_hz"]], "bandpass", sr)),
    Member("high_shelf", "filter", lambda r, sr: _shelf_draw(r, sr, 800.0, 6000.0),
           lambda x, sr, s: _board(_pb().HighShelfFilter(s["cutoff_hz"], s["gain_db"], s["q"]), x, sr)),
    Member("low_shelf", "filter", lambda r, sr: _shelf_draw(r, sr, 80.0, 600.0),
           lambda x, sr, s: _board(_pb().LowShelfFilter(s["cutoff_hz"], s["gain_db"], s["q"]), x, sr)),
    Member("peak_eq", "filter", _peak_draw, lambda x, sr, s: _board(_pb().PeakFilter(s["cutoff_hz"], s["gain_db"], s["q"]), x, sr)),
    Member("pedalboard_reverb", "reverb", _pb_reverb_draw, _pb_reverb),
    Member("noise_ir", "reverb", _noise_ir_draw, _noise_ir),
    Member("schroeder", "reverb", _schroeder_draw, _schroeder),
    Member("pedalboard_delay", "echo", _pb_delay_draw, _pb_delay),
    Member("slapback", "echo", _slapback_draw, _slapback),
    Member("pedalboard_distortion", "saturation", _drive_draw, _pb_distortion),
    Member("hard_clip", "saturation", _hard_clip_draw, _hard_clip),
    Member("cubic", "saturation", _drive_draw, _cubic),
    Member("tube", "saturation", _tube_draw, _tube),
    Member("compressor", "dynamics", _comp_draw, _compressor),
    Member("limiter", "dynamics", _limiter_draw, _limiter),
    Member("gate", "dynamics", _gate_draw, _gate),
    Member("mulaw", "codec", _mulaw_draw, _mulaw),
    Member("quantise", "codec", _quant_draw, _quantise),
    Member("resample", "codec", _resample_draw, _resample),
    Member("mp3", "codec", _mp3_draw, _mp3),
    Member("chorus", "modulation", _chorus_draw, _chorus),
    Member("flanger", "modulation", _flanger_draw, _chorus),
    Member("phaser", "modulation", _phaser_draw, _phaser),
    Member("tremolo", "modulation", _tremolo_draw, _tremolo),
    Member("noise", "noise", _noise_draw, _coloured_noise),
    Member("hum", "noise", _hum_draw, _hum),
]}
FAMILIES: dict[str, list[str]] = {}
for _m in MEMBERS.values():
    FAMILIES.setdefault(_m.family, []).append(_m.name)


def allowed_members(exclude: list[str]) -> dict[str, list[str]]:
    """family -> its members left after ``exclude`` (family names drop the family, member names one member);
    raises ValueError naming the first unknown name."""
    unknown = [e for e in exclude if e not in FAMILIES and e not in MEMBERS]
    if unknown:
        raise ValueError(f"unknown effect {unknown[0]!r} (families: {', '.join(FAMILIES)}; members: {', '.join(MEMBERS)})")
    out = {f: [m for m in ms if m not in exclude] for f, ms in FAMILIES.items() if f not in exclude}
    out = {f: ms for f, ms in out.items() if ms}
    if not out:
        raise ValueError("every processing family is excluded: nothing left to learn from")
    return out


Chain = list[tuple[str, Settings]]


def draw_chain(rng: np.random.Generator, sr: int, allowed: dict[str, list[str]], max_len: int = 2,
               p_extra: float = 0.25) -> Chain:
    """One to ``max_len`` members of distinct families; a family is drawn uniformly (members with many siblings
    do not crowd out the rest), then a member of it."""
    families = list(allowed)
    n = 1 + sum(rng.random() < p_extra for _ in range(max_len - 1))
    picked = [families[int(i)] for i in rng.permutation(len(families))[: min(n, len(families))]]
    chain = []
    for f in picked:
        name = allowed[f][int(rng.integers(len(allowed[f])))]
        chain.append((name, MEMBERS[name].draw(rng, sr)))
    return chain


def apply_chain(x: np.ndarray, sr: int, chain: Chain) -> np.ndarray:
    """``x`` (mono) through every member of ``chain`` in order, each fed at peak 1; output at the input's RMS."""
    x = np.asarray(x, dtype=np.float64)
    rms = np.sqrt(np.mean(x ** 2))
    y = x
    for name, settings in chain:
        peak = np.max(np.abs(y))
        if peak <= 0:
            break
        y = MEMBERS[name].apply(y / peak, sr, settings)
        y = np.nan_to_num(np.asarray(y, dtype=np.float64)[: len(x)])
    out_rms = np.sqrt(np.mean(y ** 2))
    return y * (rms / out_rms) if out_rms > 0 else y
