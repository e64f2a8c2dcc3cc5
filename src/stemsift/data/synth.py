"""Default multitrack song generator: procedural or Bach-chorale note material rendered per stem
with a General MIDI SoundFont (tinysoundfont), giving vocals/bass/drums/other stems and song metadata."""
from __future__ import annotations

import math
import re
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from stemsift import LABELS


@dataclass(frozen=True)
class SynthConfig:
    """How songs are rendered: rate, channels, length, SoundFont, and share of chorale-based songs."""

    sample_rate: int = 16000
    channels: int = 2  # 1 or 2
    duration: float = 20.0  # seconds; every stem has exactly round(duration * sample_rate) frames
    soundfont: str | None = None  # None or "default" -> pretty_midi's TimGM6mb.sf2
    chorale_share: float = 0.3  # share of songs (decided from the seed) using Bach-chorale notes
    texture: str = "pop"  # pop | chorale | folk | independent | groove (stemsift.data.textures)
    level_spread_db: float = 0.0  # extra per-stem level, uniform +-spread dB on top of the +-3 dB jitter


# ----------------------------------------------------------------------------- music tables
NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
PROGRESSIONS = {
    "major": ("I V vi IV", "I vi IV V", "vi IV I V", "I IV V IV", "ii V I I", "I bVII IV I",
              "I iii IV V", "IV I V vi", "I IV vi V", "I V IV V", "vi ii V I", "IV V iii vi"),
    "minor": ("i bVI bIII bVII", "i iv v i", "i bVII bVI V", "i iv bVII bIII", "i bVI iv V",
              "i bIII bVII iv", "iv i V i", "i v bVI bVII", "i bVI bVII i", "iio V i i"),
}
_ROMAN = {"i": 0, "ii": 2, "iii": 4, "iv": 5, "v": 7, "vi": 9, "vii": 11}
_TRIADS = {"maj": (0, 4, 7), "min": (0, 3, 7), "dim": (0, 3, 6)}
VOCAL_PROGRAMS = (52, 53, 54, 85)
BASS_PROGRAMS = tuple(range(32, 40))
OTHER_FAMILIES = {  # family -> (GM programs, roles it can take)
    "piano": (tuple(range(0, 8)), ("block", "arp", "block")),
    "organ": (tuple(range(16, 21)), ("pad", "block")),
    "guitar": (tuple(range(24, 32)), ("block", "arp", "block")),
    "strings": ((40, 41, 42, 44, 45, 46, 48, 49, 50, 51), ("pad", "arp", "pad")),
    "brass": ((56, 57, 59, 60, 61, 62, 63), ("block", "pad")),
    "synthpad": (tuple(range(88, 96)), ("pad",)),
}
DRUM_KITS = (0, 8, 16, 24, 25, 32, 40)
# GM percussion keys by lane letter.
_KIT = {"K": 36, "S": 38, "X": 37, "C": 39, "H": 42, "P": 44, "O": 46, "R": 51, "T": 54, "Y": 49}
# (lanes on a 16- or 12-step bar: X accent, x normal, g ghost; tempo range in bpm)
GROOVES = {
    "rock": ({"K": "X.....x.X.x.....", "S": "....X.......X...", "H": "x.x.x.x.x.x.x.x."}, (95, 150)),
    "pop": ({"K": "X.......X.......", "S": "....X.......X...", "H": "xxxxxxxxxxxxxxxx"}, (85, 128)),
    "halftime": ({"K": "X.....x...x.....", "S": "........X.......", "H": "x.x.x.x.x.x.x.x."}, (120, 160)),
    "disco": ({"K": "X...X...X...X...", "S": "....X.......X...", "H": "x...x...x...x...",
               "O": "..x...x...x...x."}, (108, 128)),
    "funk": ({"K": "X..x..x...x..x..", "S": "....X..g.g..X..g", "H": "xxxxxxxxxxxxxxxx"}, (88, 112)),
    "shuffle": ({"K": "X.....x.x...", "S": "...X.....X..", "H": "x.xx.xx.xx.x"}, (80, 124)),
    "ballad": ({"K": "X.......x.x.....", "X": "....x.......x...", "H": "x.x.x.x.x.x.x.x."}, (62, 86)),
    "ride": ({"K": "X.......X.x.....", "S": "....X.......X...", "R": "x.x.x.x.x.x.x.x.",
              "P": "....x.......x..."}, (100, 140)),
    "motown": ({"K": "X.x.....X.x.....", "S": "....X.......X...", "H": "x.x.x.x.x.x.x.x.",
                "T": "....x.......x..."}, (100, 130)),
}
BASS_PATTERNS = {  # (beat offset in bar, length, tone): R root, 5 fifth, 8 octave, 3 third, W walk, A approach
    "whole": ((0, 4, "R"),),
    "half": ((0, 2, "R"), (2, 2, "5")),
    "pop": ((0, 1.5, "R"), (1.5, .5, "R"), (2, 1, "5"), (3, .5, "8"), (3.5, .5, "A")),
    "eighths": tuple((i / 2, .5, "R") for i in range(8)),
    "octaves": tuple((i / 2, .5, "R8"[i % 2]) for i in range(8)),
    "rootfifth": ((0, 1, "R"), (1, 1, "5"), (2, 1, "R"), (3, 1, "5")),
    "walking": ((0, 1, "R"), (1, 1, "W"), (2, 1, "W"), (3, 1, "A")),
    "synco": ((0, .75, "R"), (.75, .75, "R"), (1.5, 1, "5"), (2.5, .5, "8"), (3, .5, "R"), (3.5, .5, "A")),
    "reggae": ((0, 1.5, "R"), (2, .5, "3"), (2.5, .5, "5"), (3, .5, "R"), (3.5, .5, "A")),
}
COMP_RHYTHMS = {
    "halves": ((0, 2), (2, 2)), "quarters": ((0, 1), (1, 1), (2, 1), (3, 1)),
    "push": ((0, 1.5), (1.5, 2.5)), "offbeat": ((.5, .5), (1.5, .5), (2.5, .5), (3.5, .5)),
    "eighths": tuple((i / 2, .5) for i in range(8)), "synco": ((0, .75), (.75, .75), (1.5, 1), (2.5, 1.5)),
    "charleston": ((0, 1.5), (1.5, 1), (3, 1)),
}
MELODY_CELLS = ((1, 1, 1, 1), (1.5, .5, 1, 1), (.5, .5, 1, 2), (2, 1, 1), (1, .5, .5, 2), (3, 1),
                (.5, .5, .5, .5, 1, 1), (1.5, 1.5, 1), (.5, 1, .5, 2), (1, 1, 2), (.75, .75, .5, 2))
# Section name -> (P(vocals), drum style, P(bass), instruments of "other" on, velocity scale).
SECTION_STYLE = {
    "intro": (0.0, "light", 0.5, 1, 0.75), "verse": (1.0, "main", 1.0, 1, 0.85),
    "chorus": (1.0, "chorus", 1.0, 3, 1.0), "bridge": (0.6, "bridge", 1.0, 2, 0.85),
    "break": (0.0, "main", 0.4, 0, 1.0), "outro": (0.0, "light", 1.0, 2, 0.7),
}
STEM_LEVEL_DB = {"vocals": 0.0, "bass": -3.0, "drums": -1.0, "other": -3.0}  # pop-mix balance
PEAK_LIMIT = 0.49  # a hair under the 0.5 promise so float re-summation in any order stays below it
RMS_FLOOR = 10 ** (-46 / 20)  # keeps every stem clear of the -50 dBFS silence threshold
MIN_RENDER_RATE = 27000  # SoundFont filters reach 13.5 kHz; render at least twice that
LEVEL_STREAM = 7919  # seed-sequence keys of the level-spread and texture draws (stems use 0-3, independent
TEXTURE_STREAM = 7000  # 101-104): so a spread never changes the notes and textures never share draws


@dataclass
class _Part:
    """One MIDI channel of a stem: program, placement and notes (start beat, beats, key, velocity)."""

    program: int
    drum: bool = False
    pan: float = 0.5
    volume: float = 1.0
    vibrato: tuple[float, float] | None = None  # (rate Hz, depth semitones)
    notes: list = field(default_factory=list)


@dataclass
class _Section:
    """A stretch of bars with one arrangement (who plays, drum style, dynamics)."""

    name: str
    bar0: int
    bars: int
    vocals: bool
    drums: str
    bass: bool
    other: int
    vel: float


# ----------------------------------------------------------------------------- soundfont
_SF_CACHE: dict[str, object] = {}


def default_soundfont() -> Path:
    """The General MIDI SoundFont shipped inside the pretty_midi wheel."""
    import pretty_midi

    return Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"


def _soundfont(path: str | None):
    """Loaded SoundFont template for a path (cached per process; only clones are ever played)."""
    from tinysoundfont import _tinysoundfont as tsf

    p = default_soundfont() if path in (None, "default") else Path(path)
    key = str(p.resolve()) if p.exists() else str(p)
    if key not in _SF_CACHE:
        if not p.is_file():
            raise ValueError(f"soundfont not found: {p}")
        try:
            _SF_CACHE[key] = tsf.SoundFont(str(p))
        except Exception:  # tinysoundfont raises RuntimeError for unparsable files
            raise ValueError(f"cannot load soundfont {p}: not a readable .sf2/.sf3 file") from None
    return _SF_CACHE[key]


def _pick_program(rng, sf, bank: int, programs) -> int:
    """A random program among those the SoundFont actually has (first preset if none)."""
    have = [p for p in programs if sf.get_preset_index(bank, p) >= 0]
    return int(rng.choice(have)) if have else int(programs[0])


# ----------------------------------------------------------------------------- harmony helpers
def _chord(symbol: str, tonic: int) -> tuple[int, str]:
    """Roman numeral (e.g. 'bVII', 'vi', 'iio') -> (root pitch class, quality)."""
    acc, num, dim = re.fullmatch(r"([b#]?)([ivIV]+)(o?)", symbol).groups()
    root = (tonic + _ROMAN[num.lower()] + {"b": -1, "#": 1, "": 0}[acc]) % 12
    return root, "dim" if dim else ("maj" if num.isupper() else "min")


def _chord_pcs(root: int, quality: str, seventh: bool, tonic: int) -> list[int]:
    """Pitch classes of a triad, optionally with a diatonic-sounding seventh."""
    pcs = [(root + i) % 12 for i in _TRIADS[quality]]
    if seventh:  # dominant 7th on V, major 7th on other major chords, minor 7th otherwise
        pcs.append((root + (11 if quality == "maj" and (root - tonic) % 12 != 7 else 10)) % 12)
    return pcs


def _near(pc: int, target: float, lo: int = 0, hi: int = 127) -> int:
    """The pitch of class pc nearest to target, kept within [lo, hi]."""
    p = int(round(target)) + ((pc - int(round(target))) % 12)
    if p - target > 6:
        p -= 12
    while p < lo:
        p += 12
    while p > hi:
        p -= 12
    return p


def _plan(rng, tempo: float, duration: float) -> list[_Section]:
    """Song form, an excerpt of it covering the duration, and per-section arrangement flags."""
    verse, chorus = int(rng.choice([4, 8])), int(rng.choice([4, 8]))
    form = [("intro", int(rng.choice([0, 2, 2, 4]))), ("verse", verse), ("chorus", chorus), ("verse", verse),
            ("chorus", chorus), ("bridge", 4)]
    form += [("break", int(rng.choice([1, 2])))] if rng.random() < 0.6 else []
    form += [("chorus", chorus), ("outro", 4)]
    form = [s for s in form if s[1] > 0]
    start = int(rng.choice(len(form) - 2, p=_norm([4, 3, 2, 1.5, 1, 1, 0.5, 0.5, 0.5][: len(form) - 2])))
    need = math.ceil(duration * tempo / 240.0) + 1
    sections, bar = [], 0
    i = start
    while bar < need:
        name, bars = form[i] if i < len(form) else (("verse", verse), ("chorus", chorus))[(i - len(form)) % 2]
        pv, drums, pb, n_other, vel = SECTION_STYLE[name]
        if name == "intro":
            drums = str(rng.choice(["light", "none", "main"], p=[0.45, 0.25, 0.3]))
        sections.append(_Section(name, bar, bars, bool(rng.random() < pv), drums, bool(rng.random() < pb),
                                 n_other, vel * float(rng.uniform(0.9, 1.1))))
        bar, i = bar + bars, i + 1
    first = sections[0]  # short excerpts must still give every stem something to play
    if not any(s.vocals for s in sections if s.bar0 * 240.0 / tempo < duration * 0.6):
        first.vocals = True
    if not any(s.bass for s in sections if s.bar0 * 240.0 / tempo < duration * 0.6):
        first.bass = True
    first.other = max(first.other, 1)
    if first.drums == "none" and first.bars * 240.0 / tempo >= duration * 0.5:
        first.drums = "light"
    return sections


def _norm(w):
    """Weights -> probabilities."""
    w = np.asarray(w, float)
    return w / w.sum()


def _chord_track(rng, sections, mode: str, tonic: int) -> tuple[list, dict]:
    """Chords per section type as (start beat, beats, root pc, quality); also the symbols used."""
    pool = list(PROGRESSIONS[mode])
    order = rng.permutation(len(pool))
    progs = {"verse": pool[order[0]], "chorus": pool[order[1]], "bridge": pool[order[2]]}
    progs["intro"] = progs["outro"] = progs["verse"] if rng.random() < 0.5 else progs["chorus"]
    progs["break"] = progs["chorus"]
    bars_per_chord = float(rng.choice([1, 1, 1, 2, 0.5]))
    track = []
    for s in sections:
        syms = progs[s.name].split()
        t, k = s.bar0 * 4.0, 0
        while t < (s.bar0 + s.bars) * 4.0 - 1e-9:
            d = min(bars_per_chord * 4.0, (s.bar0 + s.bars) * 4.0 - t)
            track.append((t, d) + _chord(syms[k % len(syms)], tonic))
            t, k = t + d, k + 1
    return track, {"progressions": dict(progs), "bars_per_chord": bars_per_chord}


def _chord_at(track, beat: float):
    """The chord sounding at a beat."""
    starts = [c[0] for c in track]
    return track[max(0, bisect_right(starts, beat + 1e-9) - 1)]


# ----------------------------------------------------------------------------- parts
def _melody(rng, sections, track, tonic, mode, center) -> tuple[list, list]:
    """Phrased vocal melody (and a diatonic-third-below harmony for choruses) as note lists."""
    scale = [p for p in range(center - 12, center + 15) if (p - tonic) % 12 in SCALES[mode]]
    motifs = {n: [MELODY_CELLS[i] for i in rng.choice(len(MELODY_CELLS), 2, replace=False)]
              for n in ("verse", "chorus", "bridge", "other")}
    artic = float(rng.uniform(0.82, 0.97))
    lead, harm = [], []
    for s in (s for s in sections if s.vocals):
        cells = [d for c in motifs.get(s.name, motifs["other"]) for d in c]
        shift = 2 if s.name == "chorus" else 0  # choruses sit higher
        home = int(np.argmin([abs(p - center) for p in scale])) + shift
        idx = home
        plen = int(rng.choice([2, 4])) if s.bars >= 4 else s.bars
        for pb in range(s.bar0, s.bar0 + s.bars, plen):
            end = min(pb + plen, s.bar0 + s.bars) * 4.0 - float(rng.choice([1, 1.5, 2]))
            t, k, phrase = pb * 4.0 + float(rng.choice([0, 0, 0.5, 1])), 0, []
            while t < end - 0.24:
                d = min(cells[k % len(cells)], end - t)
                k += 1
                if phrase and rng.random() < 0.06:  # short breath inside the phrase
                    t += d
                    continue
                _, _, root, qual = _chord_at(track, t)
                if abs(t - 2 * round(t / 2)) < 1e-6:  # strong beats land on chord tones
                    cand = [j for j in range(max(0, idx - 3), min(len(scale), idx + 4))
                            if (scale[j] - root) % 12 in _TRIADS[qual]]
                    idx = int(rng.choice(cand)) if cand else idx
                else:
                    step = int(rng.choice([-2, -1, -1, 0, 1, 1, 2]))
                    idx += -abs(step) if idx > home + 5 else abs(step) if idx < home - 5 else step
                idx = int(np.clip(idx, 2, len(scale) - 1))
                vel = 100 * s.vel * (0.85 + 0.15 * math.sin(math.pi * (t - pb * 4) / max(end - pb * 4, 1)))
                phrase.append([t, d * artic, scale[idx], vel + rng.normal(0, 5), idx])
                t += d
            if phrase:
                phrase[-1][1] = max(phrase[-1][1], end - phrase[-1][0])  # hold the phrase's last note
                lead += [n[:4] for n in phrase]
                if s.name == "chorus":
                    harm += [[n[0], n[1], scale[max(0, n[4] - 2)], n[3] * 0.8] for n in phrase]
    return lead, harm


def _bass(rng, sections, track, pattern_verse, pattern_chorus, patterns=BASS_PATTERNS) -> list:
    """Bass line following the chord track with a pattern per section (names in `patterns`)."""
    notes, prev = [], 36
    legato = float(rng.uniform(0.75, 0.97))
    for s in (s for s in sections if s.bass):
        pat = patterns[pattern_chorus if s.name in ("chorus", "break") else
                            "whole" if s.name in ("intro", "outro") and rng.random() < 0.5 else pattern_verse]
        for bar in range(s.bar0, s.bar0 + s.bars):
            for off, d, tone in pat:
                t = bar * 4.0 + off
                c0, cd, root, qual = _chord_at(track, t)
                d = min(d, c0 + cd - t)
                if d <= 0.05:
                    continue
                r = _near(root, prev, 28, 47)
                nxt = _near(_chord_at(track, c0 + cd)[2], r, 28, 47)
                pitch = {"R": r, "5": r + 7, "8": r + 12, "3": r + _TRIADS[qual][1],
                         "W": r + int(rng.choice([_TRIADS[qual][1], 7, 2])),
                         "A": nxt + int(rng.choice([-1, 1, -2, 7])) if nxt != r else r + 7}[tone]
                notes.append([t, d * legato, pitch, 100 * s.vel * (1.0 if off == 0 else 0.85) + rng.normal(0, 5)])
                prev = r if tone == "R" else prev
    return notes


def _drums(rng, sections, groove: str) -> list:
    """Drum hits for the groove per section, with variants, fills at section ends and crashes."""
    main = GROOVES[groove][0]
    steps = len(main["K"])
    chorus = dict(main)
    if "H" in chorus and rng.random() < 0.5:  # the chorus opens up: ride, or open hats on the offbeats
        if rng.random() < 0.5:
            chorus["R"] = chorus.pop("H")
        else:
            chorus["H"], chorus["O"] = ("x...x...x...x...", "..x...x...x...x.") if steps == 16 else \
                ("x..x..x..x..", "..x..x..x..x")
    if rng.random() < 0.3:
        chorus.setdefault("T", "....x.......x..." if steps == 16 else "...x.....x..")
    bridge = GROOVES["halftime"][0] if groove != "halftime" and steps == 16 and rng.random() < 0.5 \
        else main
    light = {k: v for k, v in main.items() if k in "HRPX"}
    light["K"] = "X" + "." * (steps - 1)
    styles = {"main": main, "chorus": chorus, "bridge": bridge, "light": light}
    toms = (50, 48, 47, 45, 43, 41)
    notes = []
    for si, s in enumerate(sections):
        if s.drums == "none":
            continue
        lanes = styles[s.drums]
        for bar in range(s.bar0, s.bar0 + s.bars):
            fill = bar == s.bar0 + s.bars - 1 and si + 1 < len(sections) and rng.random() < 0.75
            fill_from = 4.0 - float(rng.choice([1, 2])) if fill else 4.0
            for lane, pat in lanes.items():
                step = 4.0 / len(pat)
                for i, ch in enumerate(pat):
                    off = i * step
                    if ch == "." or off >= fill_from:
                        continue
                    v = {"X": 1.0, "x": 0.8, "g": 0.35}[ch] * (0.75 if lane in "HRO" and i % 2 else 1.0)
                    notes.append([bar * 4.0 + off, 0.25, _KIT[lane], 110 * s.vel * v + rng.normal(0, 6)])
            if bar == s.bar0 and si > 0 and s.drums != "light":
                notes.append([bar * 4.0, 4.0, int(rng.choice([49, 57])), 110 * s.vel + rng.normal(0, 4)])
            if fill:
                step = 1 / 3 if steps == 12 else 0.25
                n = int(round((4.0 - fill_from) / step))
                kind = rng.integers(3)
                for j in range(n):
                    key = 38 if kind == 0 else toms[min(5, j * 6 // n)] if kind == 1 else (38, toms[j % 6])[j % 2]
                    notes.append([bar * 4.0 + fill_from + j * step, 0.25, key,
                                  110 * s.vel * (0.6 + 0.4 * j / max(n - 1, 1)) + rng.normal(0, 5)])
    return notes


def _comp(rng, sections, track, tonic, role: str, center: int, seventh: bool, rank: int,
          tempo: float, strum: float, rhythms=COMP_RHYTHMS) -> list:
    """Chords for one 'other' instrument: pads, rhythmic block chords (a rhythm from `rhythms`) or arpeggios."""
    rhythm = rhythms[str(rng.choice(list(rhythms)))]
    arp_step = 0.25 if tempo < 110 and rng.random() < 0.5 else 0.5
    arp_shape = int(rng.integers(3))
    extra = {n for n in ("verse", "bridge", "intro", "outro") if rng.random() < 0.4}
    notes = []
    for s in sections:
        if not (rank < s.other or (rank > 0 and s.name in extra and s.other > 0)):
            continue
        vel = float(rng.uniform(65, 95)) * s.vel
        for c0, cd, root, qual in (c for c in track if s.bar0 * 4 <= c[0] < (s.bar0 + s.bars) * 4):
            pcs = _chord_pcs(root, qual, seventh, tonic)
            voicing = sorted(_near(pc, center, 36, 96) for pc in pcs)
            if role == "pad":
                notes += [[c0, cd * 0.98, p, vel * 0.9 + rng.normal(0, 3)] for p in voicing]
            elif role == "block":
                for bar0 in np.arange(math.floor(c0 / 4) * 4.0, c0 + cd, 4.0):
                    for off, d in rhythm:
                        t = bar0 + off
                        if c0 <= t < c0 + cd:
                            v = vel * (1.0 if off % 1 == 0 else 0.85) + rng.normal(0, 4)
                            notes += [[t + j * strum, min(d, c0 + cd - t) * 0.9, p, v]
                                      for j, p in enumerate(voicing)]
            else:
                tones = voicing + [p + 12 for p in voicing]
                seq = tones if arp_shape == 0 else tones[::-1] if arp_shape == 1 else tones + tones[-2:0:-1]
                for j, t in enumerate(np.arange(c0, c0 + cd - 1e-6, arp_step)):
                    notes.append([float(t), arp_step * 1.6, seq[j % len(seq)],
                                  vel * (1.0 if j % 4 == 0 else 0.8) + rng.normal(0, 4)])
    return notes


# ----------------------------------------------------------------------------- chorales
_CHORALE_CACHE: dict[str, dict | None] = {}
_CHORALE_LIST: list = []


def _chorale_candidates() -> list:
    """Sorted corpus paths of four-part Bach chorales (file-name based, nothing parsed)."""
    if not _CHORALE_LIST:
        from music21 import corpus

        names = {p.name: p for p in corpus.getComposer("bach")}
        _CHORALE_LIST.extend(names[n] for n in sorted(names)
                             if re.fullmatch(r"bwv\d+(\.\d+)?\.mxl", n) and n != "bwv846.mxl")
    return _CHORALE_LIST


def _chorale(path) -> dict | None:
    """SATB note lists (4/4, pickup-aligned to bar lines), tonic and mode of one chorale; None if unusable."""
    key = str(path)
    if key not in _CHORALE_CACHE:
        from music21 import corpus, expressions

        score, out = corpus.parse(path), None
        parts = {}
        for p in score.parts:
            name = (p.partName or "").strip().lower()
            for voice in ("soprano", "alto", "tenor", "bass"):
                if name.startswith(voice) and voice[0].upper() not in parts:
                    parts[voice[0].upper()] = p
        ts = score.recurse().getElementsByClass("TimeSignature")
        if len(parts) == 4 and ts and ts[0].ratioString in ("4/4", "C"):
            first = parts["S"].getElementsByClass("Measure")[0].duration.quarterLength
            pickup = (4.0 - float(first)) % 4.0
            out = {"name": Path(path).stem, "parts": {}}
            for v, p in parts.items():
                line = []
                for n in p.flatten().notes:
                    if not n.isNote or n.quarterLength <= 0:
                        continue
                    ferm = any(isinstance(e, expressions.Fermata) for e in n.expressions)
                    if n.tie is not None and n.tie.type in ("continue", "stop") and line \
                            and line[-1][2] == n.pitch.midi:  # merge tied notes (stripTies is slow)
                        t, d, pitch, f = line[-1]
                        line[-1] = (t, d + float(n.quarterLength), pitch, f or ferm)
                    else:
                        line.append((float(n.offset) + pickup, float(n.quarterLength), n.pitch.midi, ferm))
                out["parts"][v] = line
            out["length"] = 4.0 * math.ceil(max(n[0] + n[1] for n in out["parts"]["S"]) / 4.0)
            # key from the signature and the final bass note (chorales end on the tonic); analysis otherwise
            ks = score.recurse().getElementsByClass("KeySignature")
            major = ks[0].asKey("major").tonic.pitchClass if ks else None
            final = out["parts"]["B"][-1][2] % 12
            if final == major:
                out["tonic"], out["mode"] = final, "major"
            elif major is not None and final == (major - 3) % 12:
                out["tonic"], out["mode"] = final, "minor"
            else:
                k = score.analyze("key")
                out["tonic"], out["mode"] = k.tonic.pitchClass, k.mode
            if out["mode"] not in SCALES:
                out = None
        _CHORALE_CACHE[key] = out
    return _CHORALE_CACHE[key]


def _chorale_lines(ch: dict, transpose: int, total_beats: float) -> dict:
    """The chorale's SATB lines transposed and looped to fill the excerpt."""
    lines = {v: [] for v in "SATB"}
    for rep in range(int(math.ceil(total_beats / ch["length"]))):
        for v, notes in ch["parts"].items():
            for t, d, p, ferm in notes:
                t += rep * ch["length"]
                if t < total_beats:
                    lines[v].append([t, d * (0.75 if ferm and v == "S" else 0.95), p + transpose, 95.0, ferm])
    return lines


def _rearticulate(notes, step: float) -> list:
    """Split long notes into repeated notes on a grid (pop-style pulses from chorale lines)."""
    out = []
    for t, d, p, v, *_ in notes:
        k = max(1, int(round(d / step)))
        out += [[t + i * d / k, d / k * 0.85, p, v * (1.0 if i == 0 else 0.85)] for i in range(k)]
    return out


def _in_sections(notes, sections, pred) -> list:
    """Notes that start inside sections satisfying pred."""
    ok = [(s.bar0 * 4.0, (s.bar0 + s.bars) * 4.0) for s in sections if pred(s)]
    return [n for n in notes if any(a <= n[0] < b for a, b in ok)]


def _scale_vel(notes, sections) -> list:
    """Apply section dynamics to velocities of (chorale) notes."""
    out = []
    for n in notes:
        s = next((s for s in sections if s.bar0 * 4 <= n[0] < (s.bar0 + s.bars) * 4), sections[-1])
        out.append([n[0], n[1], n[2], n[3] * s.vel] + list(n[4:]))
    return out


# ----------------------------------------------------------------------------- rendering
def _render(template, parts: list[_Part], tempo: float, sr: int, stereo: bool, n: int, rng) -> np.ndarray:
    """Render one stem's parts (n frames at rate sr) with a fresh clone of the SoundFont; sample-accurate events."""
    from tinysoundfont import _tinysoundfont as tsf

    sf = tsf.SoundFont(template)  # a clone has its own voices and channels: no state leaks between songs
    sf.set_output(tsf.OutputMode.StereoInterleaved if stereo else tsf.OutputMode.Mono, sr, 0.0)
    spb = 60.0 / tempo
    events = []
    for i, part in enumerate(parts):
        ch = 9 if part.drum else i + (i >= 9)
        bank = 128 if part.drum else 0
        if sf.get_preset_index(bank, part.program) >= 0:
            sf.channel_set_preset_number(ch, part.program, part.drum)
        else:
            sf.channel_set_preset_index(ch, 0)
        sf.channel_set_pan(ch, part.pan)
        sf.channel_set_volume(ch, part.volume)
        pending: dict[int, int] = {}  # key -> index of its last note-off event
        for t, d, key, vel, *_ in sorted(part.notes, key=lambda x: x[0]):
            jitter = rng.normal(0, 0.003 if part.drum else 0.006)
            on = max(0, int(round((t * spb + jitter) * sr)))
            off = max(on + 1, int(round((t + d) * spb * sr)))
            key, vel = int(key), int(np.clip(round(vel), 1, 127))
            if not 0 <= key <= 127 or on >= n:
                continue
            j = pending.get(key)
            if j is not None and events[j][0] > on:  # an earlier note-off must not cut this note
                events[j] = (on, 0, ch, key, 0)
            pending[key] = len(events) + 1
            events += [(on, 2, ch, key, vel), (off, 0, ch, key, 0)]
            if part.vibrato and (off - on) > 0.25 * sr:
                rate, depth = part.vibrato
                hop, delay = sr // 80, int(0.15 * sr)
                for f in range(on + delay, off, hop):
                    ramp = min(1.0, (f - on - delay) / (0.25 * sr))
                    bend = depth / 2.0 * ramp * math.sin(2 * math.pi * rate * (f - on - delay) / sr)
                    events.append((f, 1, ch, 8192 + int(round(bend * 8191)), 0))
                events.append((off, 1, ch, 8192, 0))
    events.sort()
    buf = np.zeros((n, 2) if stereo else (n,), np.float32)
    pos = 0
    for f, kind, ch, a, b in events:
        if f >= n:
            break
        if f > pos:
            sf.render(buf[pos:f].reshape(-1).view(np.uint8))  # the binding takes raw bytes
            pos = f
        if kind == 2:
            sf.channel_note_on(ch, a, b / 127.0)
        elif kind == 0:
            sf.channel_note_off(ch, a)
        else:
            sf.channel_set_pitch_wheel(ch, a)
    if pos < n:
        sf.render(buf[pos:n].reshape(-1).view(np.uint8))
    return buf if stereo else buf[:, None]


def _active_rms(x: np.ndarray, sr: int) -> float:
    """RMS over the 100 ms blocks where the stem is playing (so sparse stems are not over-boosted)."""
    hop = max(1, sr // 10)
    m = len(x) // hop * hop
    e = np.mean(x[:m].reshape(-1, hop * x.shape[1]).astype(np.float64) ** 2, axis=1) if m else np.zeros(1)
    return float(np.sqrt(e[e > e.max() * 1e-2].mean())) if e.max() > 0 else 0.0


# ----------------------------------------------------------------------------- the song
@dataclass
class _Song:
    """What a texture composes: each stem's parts and tempo (stems may differ), and its description."""

    parts: dict
    tempo: dict
    meta: dict


def _compose_pop(rng, template, cfg: SynthConfig) -> _Song:
    """The default texture: a procedural (or Bach-chorale-based) pop arrangement sharing one form and harmony."""
    groove = str(rng.choice(list(GROOVES)))
    tempo = float(round(rng.uniform(*GROOVES[groove][1]), 1))
    tonic, mode = int(rng.integers(12)), str(rng.choice(["major", "minor"], p=[0.6, 0.4]))
    sections = _plan(rng, tempo, cfg.duration)
    total = (sections[-1].bar0 + sections[-1].bars) * 4.0
    chorale = None
    if rng.random() < cfg.chorale_share:
        cands = _chorale_candidates()
        i0 = int(rng.integers(len(cands)))
        for j in range(len(cands)):  # deterministic fallback to the next usable chorale
            chorale = _chorale(cands[(i0 + j) % len(cands)])
            if chorale:
                break
    if chorale:
        mode = chorale["mode"]
    seventh = bool(rng.random() < 0.3)
    track, harmony = _chord_track(rng, sections, mode, tonic)

    # instrumentation: vocals, bass, drum kit, 1-3 'other' instruments from distinct families
    vocal = _Part(_pick_program(rng, template, 0, VOCAL_PROGRAMS), pan=float(rng.uniform(0.45, 0.55)),
                  vibrato=(float(rng.uniform(4.8, 6.2)), float(rng.uniform(0.15, 0.45))))
    bass = _Part(_pick_program(rng, template, 0, BASS_PROGRAMS), pan=float(rng.uniform(0.45, 0.55)))
    kit = _Part(_pick_program(rng, template, 128, DRUM_KITS), drum=True, pan=float(rng.uniform(0.4, 0.6)))
    n_other = int(rng.choice([1, 2, 3], p=[0.3, 0.45, 0.25]))
    families = [str(f) for f in rng.choice(list(OTHER_FAMILIES), n_other, replace=False)]
    others = []
    for k, fam in enumerate(families):
        progs, roles = OTHER_FAMILIES[fam]
        others.append((_Part(_pick_program(rng, template, 0, progs), pan=float(rng.uniform(0.15, 0.85)),
                             volume=float(rng.uniform(0.7, 1.0))), str(rng.choice(roles))))
    center = int(rng.integers(60, 70))
    pattern_verse, pattern_chorus = (str(p) for p in rng.choice(list(BASS_PATTERNS), 2))

    if chorale:
        transpose = (tonic - chorale["tonic"] + 6) % 12 - 6
        lines = _chorale_lines(chorale, transpose, total)
        octave = -12 if np.median([n[2] for n in lines["S"]]) > center + 7 else 0  # keep the singer's register
        vocal.notes = _scale_vel(_in_sections([[t, d, p + octave, v, f] for t, d, p, v, f in lines["S"]],
                                              sections, lambda s: s.vocals), sections)
        blines = [[t, d, p - 12 if p - 12 >= 28 else p, v] for t, d, p, v, _ in lines["B"]]
        pulse = rng.random() < 0.5
        bass.notes = _scale_vel(_in_sections(_rearticulate(blines, 0.5) if pulse else blines, sections,
                                             lambda s: s.bass), sections)
        for k, (part, role) in enumerate(others):
            notes = [[t, d, p + 12 * int(rng.integers(0, 2)) * (role == "pad"), v * 0.85]
                     for t, d, p, v, _ in lines["A"] + lines["T"]]
            notes = _rearticulate(notes, 0.5 if role == "arp" else 1.0) if role != "pad" else notes
            part.notes = _scale_vel(_in_sections(notes, sections, lambda s, k=k: k < s.other), sections)
        harm = []
        harmony = {"progressions": "chorale", "bars_per_chord": None}
    else:
        vocal.notes, harm = _melody(rng, sections, track, tonic, mode, center)
        bass.notes = _bass(rng, sections, track, pattern_verse, pattern_chorus)
        strum = float(rng.uniform(0.01, 0.025)) * tempo / 60.0
        for k, (part, role) in enumerate(others):
            c = center + int(rng.integers(-5, 6)) + (7 if role == "arp" else 0)
            part.notes = _comp(rng, sections, track, tonic, role, c, seventh, k, tempo,
                               strum if families[k] == "guitar" else 0.0)
    kit.notes = _drums(rng, sections, groove)
    vparts = [vocal]
    if harm and rng.random() < 0.5:
        vparts.append(_Part(vocal.program, pan=float(rng.uniform(0.3, 0.7)), volume=0.7, vibrato=vocal.vibrato,
                            notes=harm))
    stem_parts = {"vocals": vparts, "bass": [bass], "drums": [kit], "other": [p for p, _ in others]}
    meta = {
        "source": "chorale" if chorale else "procedural", "chorale": chorale["name"] if chorale else None,
        "key": NOTE_NAMES[tonic], "tonic_pc": tonic, "mode": mode, "tempo": tempo, "groove": groove,
        "sevenths": seventh and not chorale, **harmony,
        "sections": _sections_meta(sections, tempo, cfg.duration),
        "other_roles": [r for _, r in others], "other_families": families,
        "bass_patterns": None if chorale else [pattern_verse, pattern_chorus],
    }
    return _Song(stem_parts, {label: tempo for label in LABELS}, meta)


def _sections_meta(sections, tempo: float, duration: float) -> list:
    """The sections heard in the excerpt, for the song's metadata."""
    return [{"name": s.name, "start_s": round(s.bar0 * 240.0 / tempo, 3), "bars": s.bars, "vocals": s.vocals,
             "bass": s.bass, "drums": s.drums, "other_instruments": s.other}
            for s in sections if s.bar0 * 240.0 / tempo < duration]


def _level_offsets(seed: int, spread_db: float) -> dict[str, float]:
    """Extra per-stem level (uniform +-spread dB) from its own stream, so the notes do not change with it."""
    if spread_db <= 0:
        return {label: 0.0 for label in LABELS}
    draws = np.random.default_rng([seed, LEVEL_STREAM]).uniform(-spread_db, spread_db, len(LABELS))
    return {label: float(d) for label, d in zip(LABELS, draws)}


def render_song(seed: int, cfg: SynthConfig) -> tuple[dict[str, np.ndarray], dict]:
    """Render one song: {label: float32 (frames, channels)} for vocals/bass/drums/other, and its metadata.

    The same (seed, cfg) gives bit-identical output in any process and call order."""
    from stemsift.data.textures import TEXTURES, compose

    if cfg.channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, got {cfg.channels}")
    if cfg.texture not in TEXTURES:
        raise ValueError(f"texture must be one of {', '.join(TEXTURES)}, got {cfg.texture!r}")
    if not cfg.level_spread_db >= 0:
        raise ValueError(f"level_spread_db must be >= 0, got {cfg.level_spread_db}")
    template = _soundfont(cfg.soundfont)
    n = int(round(cfg.duration * cfg.sample_rate))
    if cfg.texture == "pop":
        rng = np.random.default_rng(seed)
        song = _compose_pop(rng, template, cfg)
    else:  # each texture its own stream: the same seed in two worlds does not repeat tempo, key or groove
        rng = np.random.default_rng([seed, TEXTURE_STREAM + TEXTURES.index(cfg.texture)])
        song = compose(cfg.texture, rng, seed, template, cfg)
    stem_parts = song.parts

    # render each stem, balance to pop-mix levels, set song loudness and keep the sum's peak in bounds
    stems, gains = {}, {}
    spread = _level_offsets(seed, float(cfg.level_spread_db))
    for i, label in enumerate(LABELS):
        # TinySoundFont's resonant filters blow up near Nyquist at low rates: render pitched stems oversampled
        up = 1 if label == "drums" else max(1, math.ceil(MIN_RENDER_RATE / cfg.sample_rate))
        x = _render(template, stem_parts[label], song.tempo[label], cfg.sample_rate * up, cfg.channels == 2,
                    n * up, np.random.default_rng([seed, i]))
        if up > 1:
            x = resample_poly(x, 1, up, axis=0).astype(np.float32)
        level = _active_rms(x, cfg.sample_rate)
        gains[label] = STEM_LEVEL_DB[label] + float(rng.uniform(-3, 3)) + spread[label]
        stems[label] = x * np.float32(10 ** (gains[label] / 20) / max(level, 1e-9))
    loud_db = float(rng.uniform(-32, -20))
    g = 10 ** (loud_db / 20) / max(_active_rms(sum(stems.values()), cfg.sample_rate), 1e-9)
    stems = {label: stems[label] * np.float32(g) for label in LABELS}
    for label in LABELS:  # a stem that plays little must still not be (near) silent over the song
        rms = float(np.sqrt(np.mean(stems[label].astype(np.float64) ** 2)))
        if 0 < rms < RMS_FLOOR:
            stems[label] *= np.float32(RMS_FLOOR / rms)
    peak = float(np.abs(sum(stems[label] for label in LABELS)).max())
    if peak > PEAK_LIMIT:
        stems = {label: stems[label] * np.float32(PEAK_LIMIT / peak) for label in LABELS}
        g *= PEAK_LIMIT / peak
    stems = {label: np.ascontiguousarray(stems[label], dtype=np.float32) for label in LABELS}

    meta = {
        "seed": int(seed), "texture": cfg.texture, **song.meta,
        "programs": {label: [p.program for p in stem_parts[label]] for label in LABELS},
        "program_names": {label: [template.get_preset_name(128 if p.drum else 0, p.program)
                                  for p in stem_parts[label]] for label in LABELS},
        "stem_level_db": {k: round(v, 2) for k, v in gains.items()}, "loudness_target_db": round(loud_db, 2),
        "level_spread_db": float(cfg.level_spread_db),
        "peak": round(float(np.abs(sum(stems[label] for label in LABELS)).max()), 4),
        "soundfont": Path(cfg.soundfont).name if cfg.soundfont not in (None, "default") else "TimGM6mb.sf2",
        "sample_rate": cfg.sample_rate, "channels": cfg.channels, "duration": cfg.duration,
    }
    return stems, meta
