"""Simulated training-data defects with ground truth, after "Towards Blind Data Cleaning" (2025).

Three defect families, as in the SDXDB23_LabelNoise, SDXDB23_Bleeding and EffectsDB datasets:

* ``label_noise`` -- ``swap``: two stems of a song exchange contents; ``merge``: stem A additionally
  contains instrument B of the same song (B's stem is kept); ``foreign``: a stem is replaced by another
  song's stem of a different label (the intruder is no sibling of the song's own parts).
* ``bleeding`` -- attenuated, optionally low-passed and/or delayed copies of the other stems leak
  into 1..4 victim stems at an exact level relative to the clean victim.
* ``effects`` -- a pedalboard ``distortion``, ``reverb`` or ``lowpass`` on a random non-empty subset
  of the song's stems.

The simulator gives nothing away but the defect itself: every processed stem is brought back to its clean
stem's active RMS (an A/B level match; ``params.level_match_db`` records the gain), and :func:`level_song`
gives every training song, clean or defective, the same treatment -- a per-song gain drawn from
``loudness.song_db``, then one headroom rule -- before the caller re-encodes it.

:func:`plan_defects` decides which songs get which defect (and kind); :func:`contaminate_song` applies
one plan to one song's stems and returns one ground-truth row per stem.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from numbers import Real

import numpy as np
from scipy.signal import butter, sosfilt

from stemsift import LABELS
from stemsift.audio import active_rms
from stemsift.stemset import SILENCE_DB, fit_headroom

DEFECTS: tuple[str, ...] = ("clean", "label_noise", "bleeding", "effects")
LABEL_NOISE_KINDS: tuple[str, ...] = ("swap", "merge", "foreign")
EFFECT_KINDS: tuple[str, ...] = ("distortion", "reverb", "lowpass")
KINDS: dict[str, tuple[str, ...]] = {
    "clean": ("",), "label_noise": LABEL_NOISE_KINDS, "bleeding": ("bleeding",), "effects": EFFECT_KINDS,
}

# Song-level proportions per preset; the exact counts are computed in plan_defects.
# Label noise is split evenly over label_noise.kinds (default swap / merge / foreign) in every preset that has it.
PRESETS: dict[str, str] = {
    "mixed": "1/2 clean, 1/4 label_noise (its kinds split evenly), 1/4 bleeding (the paper's Mixed23 100/50/50)",
    "effects": "1/2 clean, 1/2 effects split evenly into distortion / reverb / lowpass (EffectsDB)",
    "mixed25": "3/4 clean, 1/8 label_noise (its kinds split evenly), 1/8 bleeding (mixed at a quarter defective)",
    "labels": "1/2 clean, 1/2 label_noise (its kinds split evenly): label noise alone, no bleeding to mask it",
    "blend": "1/2 clean, 1/6 label_noise (its kinds split evenly), 1/6 bleeding, 1/6 effects (distortion / reverb / "
             "lowpass split evenly): every family at once",
    "harm": "1/8 of the songs per kind (each label_noise kind, bleeding, distortion, reverb, lowpass), the rest clean: "
            "bench/bench_harm.py's oracle + one kind at a time",
    "none": "all songs clean",
}

DEFAULT_CONFIG: dict = {
    "label_noise": {
        "kinds": list(LABEL_NOISE_KINDS),  # the kinds a preset's label-noise songs are split over, evenly
        # merge: gain of the added instrument B relative to B's original level, dB, drawn uniformly
        "merge_gain_db": [-6.0, 0.0],
    },
    "bleeding": {
        "level_db": [-20.0, -10.0],   # 10*log10(E(leak)/E(clean victim)), drawn per victim stem
        "victims": [1, 4],            # number of victim stems per song, inclusive, drawn uniformly
        "filter_prob": 0.5,           # probability that a victim's leak is low-pass filtered
        "cutoff_hz": [1000.0, 6000.0],  # butterworth cutoff, drawn uniformly (capped at 0.45 * sample rate)
        "filter_order": 4,
        "delay_prob": 0.5,            # probability that a victim's leak is delayed
        "delay_ms": [0.0, 20.0],
    },
    "effects": {
        "stem_prob": 0.5,             # each stem of an effects song is affected with this probability (>= 1 stem)
        "distortion": {"drive_db": 25.0},
        "reverb": {"room_size": 0.8, "damping": 0.8, "wet_level": 0.5, "dry_level": 0.4},
        "lowpass": {"cutoff_frequency_hz": 3000.0},
    },
    "loudness": {                     # the same level treatment for every training song (level_song)
        "song_db": [-4.0, 4.0],       # per-song gain, dB, drawn uniformly; centred on 0 so train keeps reference's level
        "peak": 0.99,                 # then a song whose mixture or any stem peaks above this is scaled down
    },
}


@dataclass(frozen=True)
class SongPlan:
    track_id: str
    defect: str  # one of DEFECTS
    kind: str    # "" for clean; swap/merge/foreign; bleeding; distortion/reverb/lowpass

    def __post_init__(self) -> None:
        if self.defect not in DEFECTS:
            raise ValueError(f"unknown defect {self.defect!r}; valid: {', '.join(DEFECTS)}")
        if self.kind not in KINDS[self.defect]:
            raise ValueError(f"defect {self.defect!r} has no kind {self.kind!r}; "
                             f"valid: {', '.join(repr(k) for k in KINDS[self.defect])}")


# ----------------------------------------------------------------------------------------------- plan

def _split_evenly(kinds: tuple[str, ...], n: int, rng: np.random.Generator) -> list[str]:
    """n items over kinds as equally as possible; which kinds get the remainder is drawn by rng."""
    out = [k for k in kinds for _ in range(n // len(kinds))]
    extra = rng.permutation(len(kinds))[: n % len(kinds)]
    out += [kinds[i] for i in sorted(extra)]
    return out


def plan_defects(track_ids: list[str], preset: str, seed: int,
                 label_noise_kinds: tuple[str, ...] | list[str] = LABEL_NOISE_KINDS) -> list[SongPlan]:
    """Assign a defect (and kind) to every song; result in the order of ``track_ids``.

    mixed: n_clean = n - 2*(n//4), label_noise = bleeding = n//4; mixed25: the same with n//8 each (a quarter of
    the songs defective); blend: label_noise = bleeding = effects = n//6, n_clean = n - 3*(n//6);
    effects: n_clean = n - n//2, n//2 effects; labels: the same with n//2 label noise. Label noise is split evenly
    over ``label_noise_kinds``, effects over distortion/reverb/lowpass; harm: n//8 songs per kind (every label-noise kind, bleeding, every effect),
    the rest clean; none: all clean. Which songs get what is shuffled by ``seed``.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown defect preset {preset!r}; valid: {', '.join(PRESETS)}")
    ln_kinds = _check_kinds(label_noise_kinds)
    track_ids = [str(t) for t in track_ids]
    if len(set(track_ids)) != len(track_ids):
        dup = sorted({t for t in track_ids if track_ids.count(t) > 1})
        raise ValueError(f"duplicate track ids in plan: {', '.join(dup)}")
    n = len(track_ids)
    rng = np.random.default_rng(seed)
    if preset in ("mixed", "mixed25"):
        q = n // 4 if preset == "mixed" else n // 8
        slots = ([("clean", "")] * (n - 2 * q)
                 + [("label_noise", k) for k in _split_evenly(ln_kinds, q, rng)]
                 + [("bleeding", "bleeding")] * q)
    elif preset == "labels":
        h = n // 2
        slots = [("clean", "")] * (n - h) + [("label_noise", k) for k in _split_evenly(ln_kinds, h, rng)]
    elif preset == "blend":
        s = n // 6
        slots = ([("clean", "")] * (n - 3 * s)
                 + [("label_noise", k) for k in _split_evenly(ln_kinds, s, rng)]
                 + [("bleeding", "bleeding")] * s
                 + [("effects", k) for k in _split_evenly(EFFECT_KINDS, s, rng)])
    elif preset == "harm":
        e = n // 8
        slots = ([("clean", "")] * (n - e * (len(ln_kinds) + 1 + len(EFFECT_KINDS)))
                 + [("label_noise", k) for k in ln_kinds for _ in range(e)]
                 + [("bleeding", "bleeding")] * e
                 + [("effects", k) for k in EFFECT_KINDS for _ in range(e)])
    elif preset == "effects":
        h = n // 2
        slots = [("clean", "")] * (n - h) + [("effects", k) for k in _split_evenly(EFFECT_KINDS, h, rng)]
    else:
        slots = [("clean", "")] * n
    order = rng.permutation(n)
    return [SongPlan(tid, *slots[order[i]]) for i, tid in enumerate(track_ids)]


def _check_kinds(kinds) -> tuple[str, ...]:
    if (not isinstance(kinds, (list, tuple)) or not kinds or not all(isinstance(k, str) for k in kinds)
            or len(set(kinds)) != len(kinds) or not set(kinds) <= set(LABEL_NOISE_KINDS)):
        raise ValueError(f"defect config label_noise.kinds: expected a non-empty list of distinct kinds from "
                         f"{', '.join(LABEL_NOISE_KINDS)}, got {kinds!r}")
    return tuple(kinds)


# --------------------------------------------------------------------------------------------- config

def _is_num(v) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(float(v))


def _merge(default: dict, user: dict, where: str) -> dict:
    if not isinstance(user, dict):
        raise ValueError(f"defect config{where}: expected a mapping, got {type(user).__name__}")
    out = copy.deepcopy(default)
    for key, val in user.items():
        if key not in default:
            raise ValueError(f"defect config{where}: unknown key {key!r}; valid: {', '.join(default)}")
        if isinstance(default[key], dict):
            out[key] = _merge(default[key], val, f"{where}.{key}")
        else:
            out[key] = copy.deepcopy(val)
    return out


def _range(cfg: dict, section: str, key: str, lo_min: float | None = None, integer: bool = False) -> None:
    v = cfg[section][key]
    name = f"{section}.{key}"
    if (not isinstance(v, (list, tuple)) or len(v) != 2 or not all(_is_num(x) for x in v)
            or (integer and not all(float(x).is_integer() for x in v))):
        kind = "integers" if integer else "finite numbers"
        raise ValueError(f"defect config {name}: expected [low, high] of {kind}, got {v!r}")
    lo, hi = float(v[0]), float(v[1])
    if lo > hi:
        raise ValueError(f"defect config {name}: low {lo:g} > high {hi:g}")
    if lo_min is not None and lo < lo_min:
        raise ValueError(f"defect config {name}: low {lo:g} below the minimum {lo_min:g}")
    cfg[section][key] = [int(lo), int(hi)] if integer else [lo, hi]


def _prob(cfg: dict, section: str, key: str) -> None:
    v = cfg[section][key]
    if not _is_num(v) or not 0.0 <= float(v) <= 1.0:
        raise ValueError(f"defect config {section}.{key}: expected a probability in [0, 1], got {v!r}")
    cfg[section][key] = float(v)


def resolve_config(config: dict | None = None) -> dict:
    """``config`` (possibly partial, nested) merged over DEFAULT_CONFIG and validated; a new dict."""
    cfg = _merge(DEFAULT_CONFIG, config or {}, "")
    cfg["label_noise"]["kinds"] = list(_check_kinds(cfg["label_noise"]["kinds"]))
    _range(cfg, "label_noise", "merge_gain_db")
    _range(cfg, "bleeding", "level_db")
    _range(cfg, "bleeding", "victims", integer=True, lo_min=1)
    if cfg["bleeding"]["victims"][1] > len(LABELS):
        raise ValueError(f"defect config bleeding.victims: high {cfg['bleeding']['victims'][1]} exceeds "
                         f"the {len(LABELS)} stems of a song")
    _prob(cfg, "bleeding", "filter_prob")
    _range(cfg, "bleeding", "cutoff_hz")
    if cfg["bleeding"]["cutoff_hz"][0] <= 0:
        raise ValueError(f"defect config bleeding.cutoff_hz: must be > 0 Hz, got {cfg['bleeding']['cutoff_hz']!r}")
    order = cfg["bleeding"]["filter_order"]
    if not _is_num(order) or not float(order).is_integer() or not 1 <= order <= 16:
        raise ValueError(f"defect config bleeding.filter_order: expected an integer in 1..16, got {order!r}")
    cfg["bleeding"]["filter_order"] = int(order)
    _prob(cfg, "bleeding", "delay_prob")
    _range(cfg, "bleeding", "delay_ms", lo_min=0.0)
    _prob(cfg, "effects", "stem_prob")
    eff = cfg["effects"]
    for effect, settings in (("distortion", eff["distortion"]), ("reverb", eff["reverb"]),
                             ("lowpass", eff["lowpass"])):
        for key, v in settings.items():
            if not _is_num(v):
                raise ValueError(f"defect config effects.{effect}.{key}: expected a finite number, got {v!r}")
            settings[key] = float(v)
    for key, v in eff["reverb"].items():
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"defect config effects.reverb.{key}: expected a value in [0, 1], got {v!r}")
    if eff["lowpass"]["cutoff_frequency_hz"] <= 0:
        raise ValueError("defect config effects.lowpass.cutoff_frequency_hz: must be > 0 Hz")
    _range(cfg, "loudness", "song_db")
    peak = cfg["loudness"]["peak"]
    if not _is_num(peak) or not 0.0 < float(peak) <= 1.0:
        raise ValueError(f"defect config loudness.peak: expected a full-scale fraction in (0, 1], got {peak!r}")
    cfg["loudness"]["peak"] = float(peak)
    return cfg


# ---------------------------------------------------------------------------------------- contaminate

def _energy(x: np.ndarray) -> float:
    return float(np.sum(np.square(x, dtype=np.float64)))


def _silent(x: np.ndarray) -> bool:
    e = float(np.mean(np.square(x, dtype=np.float64))) if x.size else 0.0
    return e <= 0.0 or 10 * math.log10(e) < SILENCE_DB


def _row(label: str, defect: str = "clean", kind: str = "", params: dict | None = None,
         true_instruments: list[str] | None = None) -> dict:
    return {"label": label, "defect": defect, "kind": kind, "params": params or {},
            "true_instruments": sorted(true_instruments or [])}


def _check_stems(stems: dict[str, np.ndarray]) -> tuple[int, ...]:
    if not isinstance(stems, dict) or set(stems) != set(LABELS):
        got = sorted(stems) if isinstance(stems, dict) else type(stems).__name__
        raise ValueError(f"contaminate_song: expected stems {list(LABELS)}, got {got}")
    shapes = {label: np.shape(stems[label]) for label in LABELS}
    first = shapes[LABELS[0]]
    if len(first) != 2 or first[0] == 0 or first[1] == 0:
        raise ValueError(f"contaminate_song: stems must be non-empty (frames, channels) arrays, got shape {first}")
    if any(s != first for s in shapes.values()):
        raise ValueError(f"contaminate_song: stems differ in shape: {shapes}")
    return first


def _pick(rng: np.random.Generator, items: list[str], k: int) -> list[str]:
    """k distinct items in a random order (deterministic given rng)."""
    idx = rng.choice(len(items), size=k, replace=False)
    return [items[int(i)] for i in idx]


def _fit_frames(x: np.ndarray, frames: int) -> np.ndarray:
    """x cut to ``frames``, or looped up to it (a shorter donor stem repeats rather than falling silent)."""
    reps = -(-frames // len(x))
    return np.concatenate([x] * reps, axis=0)[:frames] if reps > 1 else x[:frames]


def _label_noise(clean: dict[str, np.ndarray], out: dict[str, np.ndarray], rows: dict[str, dict],
                 present: dict[str, bool], kind: str, rng: np.random.Generator, cfg: dict,
                 donor: dict[str, np.ndarray] | None, donor_id: str) -> None:
    audible = [label for label in LABELS if present[label]]
    if kind == "swap":
        if len(audible) >= 2:
            a, b = _pick(rng, audible, 2)
        elif len(audible) == 1:  # swapping with a silent stem still mislabels the audible content
            a = audible[0]
            b = _pick(rng, [label for label in LABELS if label != a], 1)[0]
        else:
            return
        out[a], out[b] = clean[b].copy(), clean[a].copy()
        rows[a] = _row(a, "label_noise", "swap", {"swapped_with": b}, [b] if present[b] else [])
        rows[b] = _row(b, "label_noise", "swap", {"swapped_with": a}, [a] if present[a] else [])
    elif kind == "merge":
        if len(audible) < 2:
            return
        a, b = _pick(rng, audible, 2)
        lo, hi = cfg["label_noise"]["merge_gain_db"]
        gain_db = float(rng.uniform(lo, hi))
        added = clean[b].astype(np.float64) * 10 ** (gain_db / 20)
        out[a] = (clean[a].astype(np.float64) + added).astype(np.float32)
        level_db = 10 * math.log10(_energy(added) / _energy(clean[a]))
        rows[a] = _row(a, "label_noise", "merge", {"source": b, "gain_db": gain_db, "level_db": level_db},
                       [a, b])
    else:  # foreign: another song's instrument of a different label takes the place of a's content
        if donor is None:
            raise ValueError("contaminate_song: label noise 'foreign' needs a donor song's stems")
        if not audible:
            return
        a = _pick(rng, audible, 1)[0]
        offered = [label for label in LABELS if label != a and not _silent(donor[label])]
        if not offered:
            return
        b = _pick(rng, offered, 1)[0]
        out[a] = np.ascontiguousarray(_fit_frames(donor[b], len(clean[a])), dtype=np.float32)
        rows[a] = _row(a, "label_noise", "foreign", {"donor": donor_id, "donor_label": b}, [b])


def _delay(x: np.ndarray, n: int) -> np.ndarray:
    if n <= 0:
        return x
    y = np.zeros_like(x)
    if n < len(x):
        y[n:] = x[: len(x) - n]
    return y


def _bleeding(clean: dict[str, np.ndarray], out: dict[str, np.ndarray], rows: dict[str, dict],
              present: dict[str, bool], sample_rate: int, rng: np.random.Generator, cfg: dict) -> None:
    b = cfg["bleeding"]
    audible = [label for label in LABELS if present[label]]
    if len(audible) < 2:  # nothing can leak into anything audible
        return
    lo, hi = b["victims"]
    n_victims = min(int(rng.integers(lo, hi + 1)), len(audible))
    victims = sorted(_pick(rng, audible, n_victims), key=LABELS.index)
    nyq_cap = 0.45 * sample_rate
    for v in victims:
        sources = [label for label in audible if label != v]
        leak = np.sum([clean[s].astype(np.float64) for s in sources], axis=0)
        level_db = float(rng.uniform(*b["level_db"]))
        cutoff = None
        if rng.random() < b["filter_prob"]:
            c_lo, c_hi = b["cutoff_hz"]
            if c_lo >= nyq_cap:
                raise ValueError(f"defect config bleeding.cutoff_hz: {c_lo:g} Hz is not below 0.45 x the "
                                 f"sample rate ({nyq_cap:g} Hz at {sample_rate} Hz)")
            cutoff = float(rng.uniform(c_lo, min(c_hi, nyq_cap)))
            sos = butter(b["filter_order"], cutoff, btype="lowpass", fs=sample_rate, output="sos")
            leak = sosfilt(sos, leak, axis=0)
        delay_samples = 0
        if rng.random() < b["delay_prob"]:
            delay_samples = int(round(float(rng.uniform(*b["delay_ms"])) * sample_rate / 1000))
            leak = _delay(leak, delay_samples)
        e_leak, e_victim = _energy(leak), _energy(clean[v])
        if e_leak <= 0.0 or not math.isfinite(e_leak):
            continue  # e.g. everything delayed past the end: no leak, the stem stays clean
        gain = math.sqrt(e_victim * 10 ** (level_db / 10) / e_leak)
        out[v] = (clean[v].astype(np.float64) + gain * leak).astype(np.float32)
        params = {"level_db": level_db, "gain_db": 20 * math.log10(gain), "sources": sources,
                  "filtered": cutoff is not None, "cutoff_hz": cutoff,
                  "filter_order": b["filter_order"] if cutoff is not None else None,
                  "delay_ms": 1000.0 * delay_samples / sample_rate, "delay_samples": delay_samples}
        rows[v] = _row(v, "bleeding", "bleeding", params, [v] + sources)


def _board(kind: str, settings: dict):
    import pedalboard  # imported lazily: only effects songs need it

    if kind == "distortion":
        plugin = pedalboard.Distortion(**settings)
    elif kind == "reverb":
        plugin = pedalboard.Reverb(**settings)
    else:
        plugin = pedalboard.LowpassFilter(**settings)
    return pedalboard.Pedalboard([plugin])


def _effects(clean: dict[str, np.ndarray], out: dict[str, np.ndarray], rows: dict[str, dict],
             present: dict[str, bool], kind: str, sample_rate: int, rng: np.random.Generator, cfg: dict) -> None:
    e = cfg["effects"]
    candidates = [label for label in LABELS if present[label]] or list(LABELS)
    chosen = [label for label, u in zip(candidates, rng.random(len(candidates))) if u < e["stem_prob"]]
    if not chosen:
        chosen = _pick(rng, candidates, 1)
    settings = dict(e[kind])
    board = _board(kind, settings)
    for label in chosen:
        x = np.ascontiguousarray(clean[label].T, dtype=np.float32)  # pedalboard wants (channels, frames)
        y = board(x, float(sample_rate), reset=True)
        out[label] = np.ascontiguousarray(np.asarray(y, dtype=np.float32).T)
        rows[label] = _row(label, "effects", kind, {"effect": kind, **settings},
                           [label] if present[label] else [])


def _check_donor(donor: dict[str, np.ndarray], shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    if not isinstance(donor, dict) or set(donor) != set(LABELS):
        got = sorted(donor) if isinstance(donor, dict) else type(donor).__name__
        raise ValueError(f"contaminate_song: donor needs stems {list(LABELS)}, got {got}")
    out = {label: np.asarray(donor[label], dtype=np.float32) for label in LABELS}
    for label, x in out.items():
        if x.ndim != 2 or len(x) == 0 or x.shape[1] != shape[1]:
            raise ValueError(f"contaminate_song: donor stem {label} has shape {x.shape}; "
                             f"need (frames > 0, {shape[1]} channels)")
    return out


def match_level(processed: np.ndarray, clean: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float]:
    """``processed`` scaled to ``clean``'s active RMS (an A/B level match) and the gain in dB; a silent side
    leaves it as it is (0 dB): there is no level to match."""
    target, now = active_rms(clean, sample_rate), active_rms(processed, sample_rate)
    if target <= 0.0 or now <= 0.0:
        return processed, 0.0
    gain = target / now
    return (processed.astype(np.float64) * gain).astype(np.float32), 20 * math.log10(gain)


def contaminate_song(stems: dict[str, np.ndarray], plan: SongPlan, sample_rate: int,
                     rng: np.random.Generator, config: dict | None = None,
                     donor: dict[str, np.ndarray] | None = None, donor_id: str = ""
                     ) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Apply ``plan`` to one song; return new float32 stems (same shapes) and one truth row per stem.

    Rows are in LABELS order: {"label", "defect", "kind", "params", "true_instruments"}; a stem the
    defect left untouched is ``defect="clean"``, ``kind=""``, ``params={}``. ``true_instruments`` lists
    the labels whose (audible, RMS >= SILENCE_DB) clean content is in the stem. Every changed stem is brought
    back to its clean stem's active RMS (``params.level_match_db``), so the defect does not change a stem's
    loudness; nothing is clipped. ``donor`` (another song's stems, same channels, any length) is needed by
    label noise ``foreign`` only; ``donor_id`` names it in the truth. The input is not modified.
    Deterministic given ``rng``.
    """
    if not isinstance(plan, SongPlan):
        raise ValueError(f"contaminate_song: plan must be a SongPlan, got {type(plan).__name__}")
    if not isinstance(sample_rate, (int, np.integer)) or isinstance(sample_rate, bool) or sample_rate <= 0:
        raise ValueError(f"contaminate_song: sample_rate must be a positive integer, got {sample_rate!r}")
    shape = _check_stems(stems)
    donor = _check_donor(donor, shape) if donor is not None else None
    cfg = resolve_config(config)
    clean = {label: np.asarray(stems[label], dtype=np.float32) for label in LABELS}
    present = {label: not _silent(clean[label]) for label in LABELS}
    out = {label: clean[label].copy() for label in LABELS}
    rows = {label: _row(label, true_instruments=[label] if present[label] else []) for label in LABELS}
    if plan.defect == "label_noise":
        _label_noise(clean, out, rows, present, plan.kind, rng, cfg, donor, str(donor_id))
    elif plan.defect == "bleeding":
        _bleeding(clean, out, rows, present, int(sample_rate), rng, cfg)
    elif plan.defect == "effects":
        _effects(clean, out, rows, present, plan.kind, int(sample_rate), rng, cfg)
    for label in LABELS:  # the defect, not its loudness: a mixing engineer's A/B level match
        if rows[label]["defect"] != "clean":
            out[label], rows[label]["params"]["level_match_db"] = match_level(out[label], clean[label], sample_rate)
    return out, [rows[label] for label in LABELS]


def level_song(stems: dict[str, np.ndarray], rng: np.random.Generator, config: dict | None = None
               ) -> tuple[dict[str, np.ndarray], dict]:
    """One song's level treatment, identical for clean and defective songs: a gain drawn from
    ``loudness.song_db``, then one common gain that keeps the mixture and every stem at or under
    ``loudness.peak`` (:func:`~stemsift.stemset.fit_headroom`). Returns float32 stems and
    {"song_db", "headroom_db"} (the two gains, dB)."""
    cfg = resolve_config(config)["loudness"]
    song_db = float(rng.uniform(*cfg["song_db"]))
    g = 10 ** (song_db / 20)
    scaled = {label: np.asarray(x, dtype=np.float64) * g for label, x in stems.items()}
    fitted, head = fit_headroom(scaled, cfg["peak"])
    return fitted, {"song_db": song_db, "headroom_db": 20 * math.log10(head)}
