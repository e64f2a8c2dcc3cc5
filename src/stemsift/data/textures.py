"""Music textures besides the default pop songs, so synthetic worlds differ where real collections differ:
homophonic chorales, folk melodies with a simple accompaniment, stems drawn from unrelated songs, and
drum-led grooves whose bass and chords lock to the drums. Each composes parts for synth.render_song."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from stemsift import LABELS
from stemsift.data import synth as sy

TEXTURES = ("pop", "chorale", "folk", "independent", "groove")

# GM programs per stem for the chorale and folk worlds (an ensemble, not a band)
CHORALE_OTHER = (tuple(range(16, 21)), (40, 41, 42, 48, 49, 52), (56, 57, 58, 60, 61), (0, 1, 6), (68, 69, 71))
CHORALE_BASS = (32, 33, 43, 58, 70)  # bass guitars, contrabass, tuba, bassoon
FOLK_OTHER = {"guitar": (24, 25), "piano": (0, 1, 2), "accordion": (21, 22, 23), "strings": (40, 48, 49)}
# Light folk drum lanes per meter on one 4-beat bar (3-beat meters are stretched onto a 12-step bar).
FOLK_GROOVES = {
    "duple": ({"K": "X.......X.......", "H": "x...x...x...x..."},
              {"K": "X.......x.......", "X": "....x.......x...", "H": "x.x.x.x.x.x.x.x."}),
    "triple": ({"K": "X...........", "H": "....x...x..."}, {"K": "X...........", "X": "....x...x..."}),
    "compound": ({"K": "X.....x.....", "H": "x.x.x.x.x.x."}, {"K": "X...........", "X": "......x....."}),
}
FOLK_BASS = {"duple": {"half": ((0, 2, "R"), (2, 2, "5")), "whole": ((0, 4, "R"),)},
             "triple": {"oom": ((0, 4, "R"),), "oomfive": ((0, 4 / 3, "R"), (4 / 3, 8 / 3, "5"))},
             "compound": {"dotted": ((0, 2, "R"), (2, 2, "5")), "rolling": ((0, 4 / 3, "R"), (4 / 3, 2 / 3, "5"),
                                                                          (2, 4 / 3, "R"), (10 / 3, 2 / 3, "5"))}}
FOLK_COMP = {"duple": {"offbeat": ((1, 1), (3, 1)), "halves": ((0, 2), (2, 2))},
             "triple": {"pahpah": ((4 / 3, 4 / 3), (8 / 3, 4 / 3))},
             "compound": {"dotted": ((0, 2), (2, 2)), "after": ((2 / 3, 4 / 3), (8 / 3, 4 / 3))}}
GROOVE_VAMPS = {"major": ("I", "I IV", "I bVII", "I vi", "IV I"), "minor": ("i", "i iv", "i bVII", "i bVI", "i v")}
RIFF_TONES = ("R", "R", "R", "8", "5", "b7")  # bass riff steps: mostly the root, some octave / fifth / flat seventh


# ----------------------------------------------------------------------------- shared helpers
def _lane_hits(rng, lanes: dict, bars: int, vel: float) -> list:
    """Drum notes for step patterns repeated over bars (the same lanes as synth.GROOVES, no fills)."""
    notes = []
    for bar in range(bars):
        for lane, pat in lanes.items():
            step = 4.0 / len(pat)
            for i, ch in enumerate(pat):
                if ch != ".":
                    v = {"X": 1.0, "x": 0.8, "g": 0.35}[ch] * vel
                    notes.append([bar * 4.0 + i * step, 0.25, sy._KIT[lane], 110 * v + rng.normal(0, 5)])
    return notes


def _one_section(bars: int, drums: str, other: int, vel: float) -> list:
    """A single section where every stem plays (textures without a verse/chorus form)."""
    return [sy._Section("verse", 0, bars, True, drums, True, other, vel)]


def _bars(duration: float, tempo: float) -> int:
    """Bars of four beats needed to cover the excerpt."""
    return math.ceil(duration * tempo / 240.0) + 1


def _vocal(rng, template) -> sy._Part:
    return sy._Part(sy._pick_program(rng, template, 0, sy.VOCAL_PROGRAMS), pan=float(rng.uniform(0.45, 0.55)),
                    vibrato=(float(rng.uniform(4.8, 6.2)), float(rng.uniform(0.15, 0.45))))


def _kit(rng, template) -> sy._Part:
    return sy._Part(sy._pick_program(rng, template, 128, sy.DRUM_KITS), drum=True, pan=float(rng.uniform(0.4, 0.6)))


def _register(notes, center: int) -> int:
    """Octave shift that brings a melody's median near a singer's centre."""
    return -12 * int(round((float(np.median([n[2] for n in notes])) - center) / 12.0))


def _song(parts: dict, tempo: float, meta: dict, start: float = 0.0) -> sy._Song:
    """The song, its excerpt beginning at beat `start` (a pickup's first note: no silent bar opening)."""
    for plist in parts.values():
        for part in plist:
            part.notes = [[n[0] - start] + list(n[1:]) for n in part.notes if n[0] >= start - 1e-9]
    return sy._Song(parts, {label: tempo for label in LABELS}, meta)


# ----------------------------------------------------------------------------- chorale
def _compose_chorale(rng, seed, template, cfg) -> sy._Song:
    """A four-part Bach chorale as the whole song: soprano -> vocals, bass -> bass, alto + tenor -> other,
    the parts moving together; drums a soft kick and ride on the beat."""
    tempo = float(round(rng.uniform(60, 96), 1))
    cands = sy._chorale_candidates()
    i0, chorale = int(rng.integers(len(cands))), None
    for j in range(len(cands)):  # deterministic fallback to the next usable chorale
        chorale = sy._chorale(cands[(i0 + j) % len(cands)])
        if chorale:
            break
    tonic = int(rng.integers(12))
    bars = _bars(cfg.duration, tempo) + 1  # one more: the excerpt starts at the pickup
    lines = sy._chorale_lines(chorale, (tonic - chorale["tonic"] + 6) % 12 - 6, bars * 4.0)
    vel = float(rng.uniform(0.8, 1.0))
    vocal = _vocal(rng, template)
    shift = _register(lines["S"], int(rng.integers(60, 70)))
    vocal.notes = [[t, d, p + shift, v * vel] for t, d, p, v, _ in lines["S"]]
    bass = sy._Part(sy._pick_program(rng, template, 0, CHORALE_BASS), pan=float(rng.uniform(0.45, 0.55)))
    bass.notes = [[t, d, p - 12 if p - 12 >= 28 else p, v * vel] for t, d, p, v, _ in lines["B"]]
    n_other = int(rng.choice([1, 2], p=[0.6, 0.4]))
    others = []
    for k in rng.choice(len(CHORALE_OTHER), n_other, replace=False):  # alto + tenor, doubled by a second choir
        part = sy._Part(sy._pick_program(rng, template, 0, CHORALE_OTHER[k]), pan=float(rng.uniform(0.2, 0.8)),
                        volume=float(rng.uniform(0.7, 1.0)))
        up = 12 * int(len(others) > 0 and rng.random() < 0.5)
        part.notes = [[t, d, p + up, v * vel * 0.85] for t, d, p, v, _ in lines["A"] + lines["T"]]
        others.append(part)
    kit = _kit(rng, template)
    lanes = {"K": "X.......x.......", str(rng.choice(["R", "H"])): "x...x...x...x..."}
    kit.notes = _lane_hits(rng, lanes, bars, 0.55 * vel)
    parts = {"vocals": [vocal], "bass": [bass], "drums": [kit], "other": others}
    meta = {"source": "chorale", "chorale": chorale["name"], "key": sy.NOTE_NAMES[tonic], "tonic_pc": tonic,
            "mode": chorale["mode"], "tempo": tempo, "groove": "chorale-pulse"}
    return _song(parts, tempo, meta, start=min(n[0] for n in lines["S"]))


# ----------------------------------------------------------------------------- folk
_FOLK_LIST: list = []
_FOLK_CACHE: dict = {}
_FOLK_METERS = {"2/4": "duple", "4/4": "duple", "3/4": "triple", "6/8": "compound"}


def _folk_candidates() -> list:
    """(file, tune number, meter) of the Essen folk-song collection's tunes in one simple meter (text scan)."""
    if not _FOLK_LIST:
        from music21 import corpus

        root = Path(corpus.__file__).parent / "essenFolksong"  # ships in the music21 wheel (offline)
        for f in sorted(root.glob("*.abc")):
            if f.stem.startswith(("test", "variant")):
                continue
            for block in re.split(r"\n(?=X:)", f.read_text(encoding="latin-1")):
                num = re.match(r"X:\s*(\d+)", block)
                meters = re.findall(r"^M:\s*(\S+)", block, re.M)
                if num and len(meters) == 1 and meters[0] in _FOLK_METERS and "[M:" not in block:
                    _FOLK_LIST.append((f.name, int(num.group(1)), meters[0]))
    return _FOLK_LIST


def _folk_tune(name: str, number: int, meter: str) -> dict | None:
    """One tune as (beat, beats, midi) on 4-beat bars (3-beat meters stretched by 4/3), its tonic and mode."""
    key = (name, number)
    if key not in _FOLK_CACHE:
        from music21 import corpus

        out = None
        try:
            score = corpus.parse(f"essenFolksong/{name}", number=number)
        except Exception:  # a tune music21 cannot read is skipped, not fatal
            score = None
        notes = [n for n in score.flatten().notes if n.isNote] if score is not None else []
        if len(notes) >= 8:
            bar = 4.0 if meter == "4/4" else 2.0 if meter == "2/4" else 3.0
            scale = 4.0 / 3.0 if bar == 3.0 else 1.0
            first = score.recurse().getElementsByClass("Measure")
            pickup = (bar - float(first[0].duration.quarterLength)) % bar if first else 0.0
            line = [[(float(n.offset) + pickup) * scale, float(n.quarterLength) * scale, n.pitch.midi] for n in notes]
            span = line[-1][0] + line[-1][1]
            out = {"name": f"{Path(name).stem}#{number}", "meter": meter, "line": line,
                   "length": 4.0 * math.ceil(span / 4.0 - 1e-6)}
            ks = score.recurse().getElementsByClass("KeySignature")
            major = ks[0].asKey("major").tonic.pitchClass if ks else 0
            final = line[-1][2] % 12  # folk songs end on the tonic; the key signature tells major from minor
            out["tonic"], out["mode"] = (final, "minor") if final == (major - 3) % 12 else (major, "major")
        _FOLK_CACHE[key] = out
    return _FOLK_CACHE[key]


def _harmonise(line, length: float, loops: int, tonic: int, mode: str, step: float) -> list:
    """A chord per `step` beats from I/IV/V/vi (i/iv/V/bVI): the one covering most melody time there."""
    chords = [sy._chord(s, tonic) for s in (("I", "IV", "V", "vi") if mode == "major" else ("i", "iv", "V", "bVI"))]
    one = []
    for t0 in np.arange(0.0, length, step):
        weight = np.zeros(12)
        for t, d, p in line:
            weight[p % 12] += max(0.0, min(t + d, t0 + step) - max(t, t0))
        fit = [sum(weight[(r + i) % 12] for i in sy._TRIADS[q]) - 0.01 * k for k, (r, q) in enumerate(chords)]
        one.append((float(t0), step) + chords[int(np.argmax(fit))])
    return [(t + i * length, d, r, q) for i in range(loops) for t, d, r, q in one]


def _compose_folk(rng, seed, template, cfg) -> sy._Song:
    """A folk melody (Essen collection) sung, with bass on the chord roots, a strummed or held accompaniment
    and a light groove in the tune's meter."""
    cands = _folk_candidates()
    i0, tune = int(rng.integers(len(cands))), None
    for j in range(len(cands)):  # deterministic fallback to the next readable tune
        tune = _folk_tune(*cands[(i0 + j) % len(cands)])
        if tune:
            break
    kind = _FOLK_METERS[tune["meter"]]
    tempo = float(round(rng.uniform(*{"duple": (76, 118), "triple": (84, 132), "compound": (80, 120)}[kind]), 1))
    tonic = int(rng.integers(12))
    transpose = (tonic - tune["tonic"] + 6) % 12 - 6
    bars = _bars(cfg.duration, tempo) + 1  # one more: the excerpt starts at the pickup
    loops = int(math.ceil(bars * 4.0 / tune["length"]))
    line = [[t + i * tune["length"], d, p + transpose] for i in range(loops) for t, d, p in tune["line"]]
    line = [n for n in line if n[0] < bars * 4.0]
    vel = float(rng.uniform(0.8, 1.0))
    sections = _one_section(bars, "main", 1, vel)
    vocal = _vocal(rng, template)
    shift = _register(line, int(rng.integers(60, 70)))
    artic = float(rng.uniform(0.85, 0.97))
    vocal.notes = [[t, d * artic, p + shift, 95 * vel + rng.normal(0, 5)] for t, d, p in line]
    step = 4.0 if kind != "duple" or rng.random() < 0.5 else 2.0
    track = _harmonise([[t, d, p] for t, d, p in tune["line"]], tune["length"], loops, tune["tonic"], tune["mode"],
                       step)
    track = [(t, d, (r + transpose) % 12, q) for t, d, r, q in track]
    bass = sy._Part(sy._pick_program(rng, template, 0, (32, 33, 35, 43)), pan=float(rng.uniform(0.45, 0.55)))
    pats = FOLK_BASS[kind]
    pattern = str(rng.choice(list(pats)))
    bass.notes = sy._bass(rng, sections, track, pattern, pattern, pats)
    family = str(rng.choice(list(FOLK_OTHER)))
    other = sy._Part(sy._pick_program(rng, template, 0, FOLK_OTHER[family]), pan=float(rng.uniform(0.25, 0.75)))
    role = "pad" if family in ("accordion", "strings") and rng.random() < 0.5 else "block"
    strum = float(rng.uniform(0.01, 0.025)) * tempo / 60.0 if family == "guitar" else 0.0
    other.notes = sy._comp(rng, sections, track, tonic, role, int(rng.integers(55, 66)), False, 0, tempo, strum,
                           FOLK_COMP[kind])
    kit = _kit(rng, template)
    lanes = FOLK_GROOVES[kind][int(rng.integers(len(FOLK_GROOVES[kind])))]
    kit.notes = _lane_hits(rng, lanes, bars, 0.6 * vel)
    parts = {"vocals": [vocal], "bass": [bass], "drums": [kit], "other": [other]}
    meta = {"source": "folk", "tune": tune["name"], "meter": tune["meter"], "key": sy.NOTE_NAMES[tonic],
            "tonic_pc": tonic, "mode": tune["mode"], "tempo": tempo, "groove": f"folk-{kind}",
            "other_roles": [role], "other_families": [family], "bass_patterns": [pattern]}
    return _song(parts, tempo, meta, start=line[0][0])


# ----------------------------------------------------------------------------- independent
def _compose_independent(rng, seed, template, cfg) -> sy._Song:
    """Each stem taken from its own pop song (own seed, key, tempo, form and progression): no shared harmony
    or rhythm between stems."""
    parts, tempo, meta = {}, {}, {"source": "independent", "stems": {}}
    for i, label in enumerate(LABELS):
        sub = int(np.random.SeedSequence([seed, 101 + i]).generate_state(1)[0])
        song = sy._compose_pop(np.random.default_rng(sub), template, cfg)
        parts[label], tempo[label] = song.parts[label], song.tempo[label]
        meta["stems"][label] = {"seed": sub, **{k: song.meta[k] for k in ("source", "key", "mode", "tempo")}}
    meta["tempo"] = tempo["drums"]
    return sy._Song(parts, tempo, meta)


# ----------------------------------------------------------------------------- groove
def _compose_groove(rng, seed, template, cfg) -> sy._Song:
    """A drum-led vamp: one groove repeated, the bass riff on the kick's steps, chord stabs on the kick and
    snare steps, and a short vocal hook on the same grid, all repeating every bar or two."""
    groove = str(rng.choice(list(sy.GROOVES)))
    tempo = float(round(rng.uniform(*sy.GROOVES[groove][1]), 1))
    lanes = sy.GROOVES[groove][0]
    steps = len(lanes["K"])
    grid = 4.0 / steps
    kick = [i for i, c in enumerate(lanes["K"]) if c != "."]
    backbeat = sorted(set(kick) | {i for lane in "SX" for i, c in enumerate(lanes.get(lane, "")) if c != "."})
    tonic, mode = int(rng.integers(12)), str(rng.choice(["major", "minor"], p=[0.4, 0.6]))
    bars = _bars(cfg.duration, tempo)
    vamp = str(rng.choice(GROOVE_VAMPS[mode])).split()
    per = int(rng.choice([1, 2]))  # bars per chord
    track = [(b * 4.0, 4.0) + sy._chord(vamp[(b // per) % len(vamp)], tonic) for b in range(bars)]
    vel = float(rng.uniform(0.85, 1.0))
    sections = _one_section(bars, "main", 1, vel)
    kit = _kit(rng, template)
    kit.notes = sy._drums(rng, sections, groove)  # one section: the groove without fills or crashes

    tones = [str(rng.choice(RIFF_TONES)) if j else "R" for j in range(len(kick))]  # a fixed riff shape
    bass = sy._Part(sy._pick_program(rng, template, 0, sy.BASS_PROGRAMS), pan=float(rng.uniform(0.45, 0.55)))
    for b in range(bars):
        root = sy._near(track[b][2], 36, 28, 47)
        for j, i in enumerate(kick):
            nxt = kick[j + 1] if j + 1 < len(kick) else steps
            p = root + {"R": 0, "8": 12, "5": 7, "b7": 10}[tones[j]]
            bass.notes.append([b * 4.0 + i * grid, (nxt - i) * grid * 0.8, p, 105 * vel + rng.normal(0, 4)])

    other = sy._Part(sy._pick_program(rng, template, 0, sy.OTHER_FAMILIES[str(rng.choice(["piano", "guitar",
                     "brass", "organ"]))][0]), pan=float(rng.uniform(0.25, 0.75)))
    center = int(rng.integers(58, 68))
    for b in range(bars):
        voicing = sorted(sy._near(pc, center, 36, 96) for pc in sy._chord_pcs(track[b][2], track[b][3], False, tonic))
        for i in backbeat:
            other.notes += [[b * 4.0 + i * grid, grid * 1.5, p, 90 * vel + rng.normal(0, 4)] for p in voicing]

    vocal = _vocal(rng, template)
    scale = [p for p in range(center, center + 14) if (p - tonic) % 12 in sy.SCALES[mode]]
    hook_steps = sorted(set(backbeat) | {i for i in range(0, steps, 2) if rng.random() < 0.3})
    hook = [(i, int(rng.integers(len(scale)))) for i in hook_steps]
    length = int(rng.choice([1, 2]))  # the hook repeats every bar or two, resting in between
    for b in range(0, bars, 2 * length):
        for rep in range(length):
            for j, (i, k) in enumerate(hook):
                nxt = hook[j + 1][0] if j + 1 < len(hook) else steps
                vocal.notes.append([(b + rep) * 4.0 + i * grid, (nxt - i) * grid * 0.9, scale[k], 100 * vel])
    parts = {"vocals": [vocal], "bass": [bass], "drums": [kit], "other": [other]}
    meta = {"source": "groove", "key": sy.NOTE_NAMES[tonic], "tonic_pc": tonic, "mode": mode, "tempo": tempo,
            "groove": groove, "vamp": " ".join(vamp), "bars_per_chord": per}
    return _song(parts, tempo, meta)


_COMPOSERS = {"chorale": _compose_chorale, "folk": _compose_folk, "independent": _compose_independent,
              "groove": _compose_groove}


def compose(texture: str, rng, seed: int, template, cfg) -> sy._Song:
    """Parts, tempi and description of one song in a texture other than pop."""
    return _COMPOSERS[texture](rng, seed, template, cfg)


# ----------------------------------------------------------------------------- a texture's signature
def onset_envelope(x: np.ndarray, sr: int, hop_s: float = 0.01) -> np.ndarray:
    """Spectral-flux onset strength, 10 ms frames: the half-wave rectified rise of log energy in 24 log-spaced
    bands (bands, not bins, so vibrato and glides are not onsets; log, so the stem's level does not count)."""
    mono = x.mean(axis=1) if x.ndim == 2 else x
    hop, n_fft = max(1, int(sr * hop_s)), 1 << int(math.ceil(math.log2(0.04 * sr)))
    if len(mono) < n_fft + hop:
        return np.zeros(1)
    frames = np.lib.stride_tricks.sliding_window_view(mono.astype(np.float64), n_fft)[::hop] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    edges = np.searchsorted(np.fft.rfftfreq(n_fft, 1.0 / sr), np.geomspace(60.0, sr / 2.0, 25))
    band = np.add.reduceat(power, edges[:-1], axis=1)
    logb = np.log(band + 1e-4 * band.max() + 1e-20)
    flux = np.maximum(np.diff(logb, axis=0), 0).sum(axis=1)
    return flux - np.convolve(flux, np.ones(50) / 50, mode="same")  # minus the 0.5 s trend: onsets only


def onset_coherence(stems: dict, sr: int) -> float:
    """Mean Pearson correlation of the stems' onset envelopes over all pairs (about 0 for unrelated parts)."""
    env = [np.convolve(onset_envelope(stems[label], sr), np.ones(3) / 3, mode="same") for label in LABELS]
    pairs = [(i, j) for i in range(len(env)) for j in range(i + 1, len(env))]
    return float(np.mean([np.corrcoef(env[i], env[j])[0, 1] for i, j in pairs]))
