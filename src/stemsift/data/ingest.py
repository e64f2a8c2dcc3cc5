"""Ingest a real multitrack folder: MUSDB18-HQ / SDXDB23-style WAV folders or MUSDB18 ``.stem.mp4`` files.

Every input file is checked before anything is written; the first fault becomes one line naming the file.
The written mixture is always the exact sum of the (resampled) stems; a given mixture is only checked.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stemsift import LABELS, MIXTURE, SPLITS
from stemsift.audio import AudioError, audio_info, match_channels, read_audio, resample
from stemsift.progress import progress
from stemsift.stemset import (AUDIO_EXTS, Finding, StemSetError, StemSetWriter, check_audio_file,
                              fit_headroom, raise_first)

# MUSDB18 .stem.mp4 stream order (sigsep/musdb): mixture, drums, bass, other, vocals.
STEM_MP4_ORDER = (MIXTURE, "drums", "bass", "other", "vocals")
STEM_MP4_SUFFIX = ".stem.mp4"


@dataclass
class InputTrack:
    """One track found in the input folder (either a folder of stem files or one .stem.mp4)."""
    track_id: str
    split: str
    origin: Path
    files: dict[str, Path] = field(default_factory=dict)  # label -> file (folder layout only)

    @property
    def is_stem_mp4(self) -> bool:
        return self.origin.name.endswith(STEM_MP4_SUFFIX)


def track_id_from_name(name: str) -> str:
    """A filesystem- and SQL-friendly id: 'The Easton Ellises - Falcon 69' -> 'the_easton_ellises_falcon_69'."""
    base = name[: -len(STEM_MP4_SUFFIX)] if name.endswith(STEM_MP4_SUFFIX) else name
    return re.sub(r"[^a-z0-9]+", "_", base.lower()).strip("_") or "track"


def discover(source: Path) -> list[InputTrack]:
    """Find tracks under ``source/{train,test,reference}``; each is a folder of stems or a .stem.mp4."""
    source = Path(source)
    if not source.is_dir():
        raise StemSetError(f"{source}: data.source is neither 'synthetic' nor an existing folder")
    splits = [d for d in sorted(source.iterdir()) if d.is_dir() and d.name in SPLITS]
    if not splits:
        raise StemSetError(f"{source}: no split folders (expected some of {', '.join(SPLITS)})")
    tracks: list[InputTrack] = []
    for sdir in splits:
        for entry in sorted(sdir.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_file() and entry.name.endswith(STEM_MP4_SUFFIX):
                tracks.append(InputTrack(track_id_from_name(entry.name), sdir.name, entry))
            elif entry.is_dir():
                tracks.append(_folder_track(entry, sdir.name))
    if not tracks:
        raise StemSetError(f"{source}: empty stem set (no track folders or .stem.mp4 files)")
    seen: dict[str, Path] = {}
    for t in tracks:
        if t.track_id in seen:
            raise StemSetError(f"{t.origin}: duplicate track id {t.track_id!r} (also {seen[t.track_id]})")
        seen[t.track_id] = t.origin
    return tracks


def _folder_track(folder: Path, split: str) -> InputTrack:
    track = InputTrack(track_id_from_name(folder.name), split, folder)
    for f in sorted(folder.iterdir()):
        if f.name.startswith(".") or not f.is_file() or f.suffix.lower() not in AUDIO_EXTS:
            continue
        name = f.stem.lower()
        if name not in LABELS + (MIXTURE,):
            raise StemSetError(f"{f}: unknown stem name {f.stem!r} (expected {', '.join(LABELS)} or {MIXTURE})")
        if name in track.files:
            raise StemSetError(f"{f}: stem {name!r} given twice ({track.files[name].name})")
        track.files[name] = f
    missing = [label for label in LABELS if label not in track.files]
    if missing:
        raise StemSetError(f"{folder}: missing stem {missing[0]!r}")
    return track


def check_track(track: InputTrack) -> list[Finding]:
    """Per-file faults plus cross-file ones (rates, lengths) for a folder track."""
    if track.is_stem_mp4:
        return []  # decoded (and checked) by ffmpeg when read
    out: list[Finding] = []
    rates, frames = {}, {}
    for label, path in track.files.items():
        found = check_audio_file(path, sample_rate=None, channels=None)
        out += found
        if any(f.fatal for f in found):
            continue
        info = audio_info(path)  # header only: check_audio_file already decoded the whole file once
        if info.channels not in (1, 2):
            out.append(Finding(str(path), f"{info.channels} channels, expected 1 or 2"))
        rates[label], frames[label] = info.samplerate, info.frames
    if len(set(rates.values())) > 1:
        odd = next(lb for lb in rates if rates[lb] != rates.get("vocals", next(iter(rates.values()))))
        out.append(Finding(str(track.files[odd]), f"sample rate {rates[odd]} Hz differs from the track's other stems"))
    if len(set(frames.values())) > 1:
        longest = max(frames, key=frames.get)
        out.append(Finding(str(track.origin), f"unequal stem lengths {dict(sorted(frames.items()))} (longest: {longest})"))
    return out


def read_track(track: InputTrack, sample_rate: int, channels: int) -> dict[str, np.ndarray]:
    """The four stems at the target rate and channel count, float32 (frames, channels)."""
    if track.is_stem_mp4:
        stems, sr = _read_stem_mp4(track.origin)
    else:
        stems, sr = {}, None
        for label in LABELS:
            x, sr = read_audio(track.files[label])
            stems[label] = x
    out = {}
    for label in LABELS:
        try:
            x = match_channels(stems[label], channels)
        except AudioError as e:
            raise StemSetError(f"{track.origin}: {label}: {e}") from None
        out[label] = resample(x, sr, sample_rate).astype(np.float32)
    return out


def _read_stem_mp4(path: Path) -> tuple[dict[str, np.ndarray], int]:
    import stempeg  # needs ffmpeg/ffprobe on PATH

    try:
        audio, sr = stempeg.read_stems(str(path), always_3d=True, dtype=np.float32)
    except Exception as e:  # stempeg surfaces ffmpeg failures as assorted exception types
        raise StemSetError(f"{path}: unreadable .stem.mp4 ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if audio.shape[0] != len(STEM_MP4_ORDER):
        raise StemSetError(f"{path}: {audio.shape[0]} streams, expected {len(STEM_MP4_ORDER)} (mixture, drums, bass, other, vocals)")
    if not np.all(np.isfinite(audio)):
        raise StemSetError(f"{path}: contains NaN/Inf samples")
    return {name: audio[i] for i, name in enumerate(STEM_MP4_ORDER)}, int(sr)


REFERENCE_LIST = "reference.txt"  # in the source folder: songs the user vouches for, one folder name per line


def read_reference_list(path: Path, tracks: list[InputTrack]) -> set[str]:
    """Track ids of the songs ``path`` names (folder or .stem.mp4 name, or track id; '#' starts a comment)."""
    ids = {t.track_id for t in tracks}
    out = set()
    for n, line in enumerate(path.read_text().splitlines(), 1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        tid = track_id_from_name(Path(name).name)
        if tid not in ids:
            raise StemSetError(f"{path}:{n}: unknown song {name!r} (no such track folder or .stem.mp4 in the source)")
        out.add(tid)
    if not out:
        raise StemSetError(f"{path}: lists no song")
    return out


def assign_reference(tracks: list[InputTrack], count: int, from_split: str, seed: int,
                     listed: set[str] | None = None) -> str:
    """Without a reference/ folder, move the ``listed`` songs, else ``count`` seeded-random tracks of
    ``from_split`` into 'reference' (auto: test when it has more than ``count`` songs, else at most a fifth of
    train, at least 2); returns a note for the log ('' when nothing moved)."""
    if any(t.split == "reference" for t in tracks):
        return ""
    if listed:
        for t in tracks:
            if t.track_id in listed:
                t.split = "reference"
        return f"{len(listed)} songs of {REFERENCE_LIST} are the clean reference (kept as they are, not scored)"
    if count <= 0:
        return ""
    if from_split == "auto":
        test = sum(t.split == "test" for t in tracks)
        from_split = "test" if test > count else "train"
        if from_split == "train":
            count = min(count, max(2, sum(t.split == "train" for t in tracks) // 5))
    pool = [t for t in tracks if t.split == from_split]
    if len(pool) <= count:
        raise StemSetError(f"data.ingest.reference_tracks={count} but split {from_split!r} has only {len(pool)} tracks")
    for i in np.random.default_rng(seed).choice(len(pool), size=count, replace=False):
        pool[int(i)].split = "reference"
    return (f"no reference/ folder or {REFERENCE_LIST}: {count} seeded-random {from_split} songs are the clean "
            f"reference (kept as they are, not scored; name your own in {REFERENCE_LIST})")


def ingest(source: str | Path, writer: StemSetWriter, *, reference_tracks: int = 0,
           reference_from: str = "test", seed: int = 0, headroom: float = 0.99) -> list[str]:
    """Check every input track, then write them all; returns the track ids written."""
    tracks = discover(Path(source))
    listed = read_reference_list(Path(source, REFERENCE_LIST), tracks) if Path(source, REFERENCE_LIST).is_file() else None
    findings = [f for t in progress(tracks, desc="prepare: check", unit="songs") for f in check_track(t)]
    raise_first(findings)
    if note := assign_reference(tracks, reference_tracks, reference_from, seed, listed):
        print(f"prepare: {note}")
    for t in progress(tracks, desc="prepare: ingest", unit="songs"):
        stems = read_track(t, writer.sample_rate, writer.channels)
        stems, gain = fit_headroom(stems, headroom)  # 16-bit files: the stems' sum must not clip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            writer.add_track(t.track_id, t.split, stems, meta={"origin": str(t.origin), "gain": gain})
    return [t.track_id for t in tracks]
