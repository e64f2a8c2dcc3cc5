"""The stem-set manifest: a MUSDB18-HQ-layout folder plus typed tables, a writer and a validator.

Layout: ``<root>/<split>/<track_id>/{mixture,vocals,bass,drums,other}.<ext>`` with
``manifest.parquet`` (one row per stem) and ``tracks.parquet`` (one row per track) at the root.
"""
from __future__ import annotations

import contextlib
import ctypes
import glob
import json
import os
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from stemsift import LABELS, MIXTURE, SPLITS
from stemsift.audio import (AudioError, audio_info, quantize, read_audio, rms_db, sha1_file, wav_truncation,
                            write_audio)

MANIFEST = "manifest.parquet"
TRACKS = "tracks.parquet"
AUDIO_EXTS = (".flac", ".wav")
SILENCE_DB = -80.0  # a stem quieter than this (RMS dBFS) counts as all-silent

# Column order and dtypes are the contract the catalogue and later stages rely on.
STEM_COLUMNS = {
    "track_id": "string", "split": "string", "label": "string", "path": "string",
    "sample_rate": "int64", "channels": "int64", "frames": "int64", "sha1": "string",
    "rms_db": "float64", "silent": "bool",
}
TRACK_COLUMNS = {
    "track_id": "string", "split": "string", "mixture_path": "string", "sample_rate": "int64",
    "channels": "int64", "frames": "int64", "sha1": "string", "source": "string", "meta": "string",
}


class StemSetError(ValueError):
    """Invalid stem set or input folder; the message is one line naming the file and the fault."""


@dataclass(frozen=True)
class Finding:
    path: str
    problem: str
    fatal: bool = True

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def fit_headroom(stems: dict[str, np.ndarray], peak: float = 0.9) -> tuple[dict[str, np.ndarray], float]:
    """Scale all stems of a song by one gain so that no stem and not their sum exceeds ``peak``."""
    mix = sum(stems.values())
    top = max([float(np.max(np.abs(mix)))] + [float(np.max(np.abs(s))) for s in stems.values()])
    gain = 1.0 if top <= peak or top == 0 else peak / top
    return {k: (v * gain).astype(np.float32) for k, v in stems.items()}, gain


class StemSetWriter:
    """Writes tracks into a (temporary) root and the two tables on ``close``."""

    def __init__(self, root: str | Path, sample_rate: int, channels: int, ext: str = "flac", source: str = ""):
        self.root = Path(root)
        self.sample_rate, self.channels, self.ext, self.source = sample_rate, channels, ext.lstrip("."), source
        self.stem_rows: list[dict] = []
        self.track_rows: list[dict] = []
        self.root.mkdir(parents=True, exist_ok=True)

    def add_track(self, track_id: str, split: str, stems: dict[str, np.ndarray], meta: dict | None = None) -> None:
        """Write the four stems and their exact sample-wise sum as the mixture."""
        if split not in SPLITS:
            raise StemSetError(f"{track_id}: unknown split {split!r} (expected one of {', '.join(SPLITS)})")
        if set(stems) != set(LABELS):
            raise StemSetError(f"{track_id}: stems {sorted(stems)} != {list(LABELS)}")
        lengths = {len(s) for s in stems.values()}
        if len(lengths) != 1:
            raise StemSetError(f"{track_id}: unequal stem lengths {sorted(lengths)}")
        tdir = self.root / split / track_id
        # The mixture is summed from exactly what the 16-bit files will hold.
        q = {k: quantize(np.asarray(stems[k], dtype=np.float32).reshape(-1, self.channels)) for k in LABELS}
        mix = np.sum([q[k].astype(np.float64) for k in LABELS], axis=0)
        for label in LABELS:
            rel = f"{split}/{track_id}/{label}.{self.ext}"
            write_audio(self.root / rel, q[label], self.sample_rate)
            level = rms_db(q[label])
            self.stem_rows.append(dict(
                track_id=track_id, split=split, label=label, path=rel, sample_rate=self.sample_rate,
                channels=self.channels, frames=len(q[label]), sha1=sha1_file(self.root / rel),
                # rounded: numpy's AVX-512 and AVX2 log10 differ in the last bit, and the manifest is in the data hash
                rms_db=round(level, 6), silent=bool(level < SILENCE_DB)))
        rel = f"{split}/{track_id}/{MIXTURE}.{self.ext}"
        write_audio(tdir / f"{MIXTURE}.{self.ext}", mix.astype(np.float32), self.sample_rate)
        self.track_rows.append(dict(
            track_id=track_id, split=split, mixture_path=rel, sample_rate=self.sample_rate,
            channels=self.channels, frames=len(mix), sha1=sha1_file(self.root / rel), source=self.source,
            meta=json.dumps(meta or {}, sort_keys=True, default=_json_default)))

    def merge(self, other: "StemSetWriter") -> None:
        """Adopt the rows of a writer that wrote into the same root (e.g. in a worker process)."""
        self.stem_rows += other.stem_rows
        self.track_rows += other.track_rows

    def copy_track(self, src: "StemSet", track_id: str, link: bool = False) -> None:
        """Copy (or hard-link: no extra space, same bytes) a track's files and rows from another stem set."""
        t = src.tracks[src.tracks.track_id == track_id]
        rows = src.stems[src.stems.track_id == track_id]
        for rel in list(rows.path) + list(t.mixture_path):
            (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
            if link:
                try:
                    os.link(src.root / rel, self.root / rel)
                    continue
                except OSError:  # another file system: fall back to a copy
                    pass
            shutil.copyfile(src.root / rel, self.root / rel)
        self.stem_rows += rows.to_dict("records")
        self.track_rows += t.to_dict("records")

    def close(self) -> "StemSet":
        if not self.track_rows:
            raise StemSetError(f"{self.root}: empty stem set (no tracks written)")
        stems = _typed(pd.DataFrame(self.stem_rows), STEM_COLUMNS).sort_values(["split", "track_id", "label"])
        tracks = _typed(pd.DataFrame(self.track_rows), TRACK_COLUMNS).sort_values(["split", "track_id"])
        stems.reset_index(drop=True).to_parquet(self.root / MANIFEST, index=False)
        tracks.reset_index(drop=True).to_parquet(self.root / TRACKS, index=False)
        return StemSet(self.root)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


def _typed(df: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    missing = set(columns) - set(df.columns)
    if missing:
        raise StemSetError(f"manifest lacks columns {sorted(missing)}")
    return df[list(columns)].astype(columns)


class StemSet:
    """A validated stem set on disk. Reading never modifies it. Opening it clears what killed writers of it left
    beside it (their temp folders; DVC's run-cache restores an output without running the stage that would)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        clear_dead_runs(self.root)
        for name in (MANIFEST, TRACKS):
            if not (self.root / name).is_file():
                raise StemSetError(f"{self.root / name}: missing (not a stem set?)")
        self.stems = _typed(pd.read_parquet(self.root / MANIFEST), STEM_COLUMNS)
        self.tracks = _typed(pd.read_parquet(self.root / TRACKS), TRACK_COLUMNS)
        findings = [f for f in check_manifest(self) if f.fatal]
        if findings:
            raise StemSetError(str(findings[0]))

    @property
    def sample_rate(self) -> int:
        return int(self.tracks.sample_rate.iloc[0])

    @property
    def channels(self) -> int:
        return int(self.tracks.channels.iloc[0])

    def track_ids(self, split: str | None = None) -> list[str]:
        t = self.tracks if split is None else self.tracks[self.tracks.split == split]
        return list(t.track_id)

    def split_of(self, track_id: str) -> str:
        return str(self.tracks.loc[self.tracks.track_id == track_id, "split"].iloc[0])

    def stem_path(self, track_id: str, label: str) -> Path:
        if label == MIXTURE:
            rel = self.tracks.loc[self.tracks.track_id == track_id, "mixture_path"]
        else:
            rel = self.stems.loc[(self.stems.track_id == track_id) & (self.stems.label == label), "path"]
        if rel.empty:
            raise KeyError(f"{self.root}: no {label!r} for track {track_id!r}")
        return self.root / rel.iloc[0]

    def load(self, track_id: str, label: str) -> np.ndarray:
        return read_audio(self.stem_path(track_id, label))[0]

    def load_track(self, track_id: str, with_mixture: bool = False) -> dict[str, np.ndarray]:
        labels = LABELS + ((MIXTURE,) if with_mixture else ())
        return {label: self.load(track_id, label) for label in labels}

    def meta(self, track_id: str) -> dict:
        return json.loads(self.tracks.loc[self.tracks.track_id == track_id, "meta"].iloc[0])

    def validate(self, deep: bool = True) -> list[Finding]:
        """Manifest checks, plus (deep) reading every file: rates, channels, NaN/Inf, hashes, silence."""
        out = check_manifest(self)
        if deep and not any(f.fatal for f in out):
            out += _check_files(self)
        return out


def check_manifest(ss: StemSet) -> list[Finding]:
    """Cheap structural checks that need no audio decoding."""
    out: list[Finding] = []
    root = ss.root.resolve()
    man = str(ss.root / MANIFEST)
    if ss.tracks.empty:
        return [Finding(str(ss.root), "empty stem set (no tracks)")]
    dup = ss.tracks.track_id[ss.tracks.track_id.duplicated()]
    if len(dup):
        out.append(Finding(str(ss.root / TRACKS), f"duplicate track id {dup.iloc[0]!r}"))
    bad_split = set(ss.tracks.split) - set(SPLITS)
    if bad_split:
        out.append(Finding(man, f"unknown split {sorted(bad_split)[0]!r}"))
    unknown = set(ss.stems.label) - set(LABELS)
    if unknown:
        out.append(Finding(man, f"unknown stem name {sorted(unknown)[0]!r} (expected {', '.join(LABELS)})"))
    for tid, g in ss.stems.groupby("track_id"):
        missing = set(LABELS) - set(g.label)
        if missing:
            out.append(Finding(man, f"track {tid!r} is missing stem {sorted(missing)[0]!r}"))
        if g.label.duplicated().any():
            out.append(Finding(man, f"track {tid!r} lists stem {g.label[g.label.duplicated()].iloc[0]!r} twice"))
        if g.frames.nunique() > 1:
            out.append(Finding(man, f"track {tid!r} has unequal stem lengths {sorted(set(g.frames))}"))
    orphans = set(ss.stems.track_id) - set(ss.tracks.track_id)
    if orphans:
        out.append(Finding(man, f"stem rows for unknown track {sorted(orphans)[0]!r}"))
    for rel in list(ss.stems.path) + list(ss.tracks.mixture_path):
        p = (ss.root / rel).resolve()
        if Path(rel).is_absolute() or not p.is_relative_to(root):
            out.append(Finding(man, f"path {rel!r} escapes the stem-set root"))
        elif not p.is_file():
            out.append(Finding(str(ss.root / rel), "listed in the manifest but missing"))
    for col in ("sample_rate", "channels"):
        if ss.stems[col].nunique() > 1:
            out.append(Finding(man, f"mixed {col.replace('_', ' ')}s {sorted(set(ss.stems[col]))}"))
    return out


def _check_files(ss: StemSet) -> list[Finding]:
    out: list[Finding] = []
    for row in ss.stems.itertuples():
        path = ss.root / row.path
        found = check_audio_file(path, ss.sample_rate, ss.channels, expected_frames=row.frames)
        out += found
        if any(f.fatal for f in found):
            continue
        if sha1_file(path) != row.sha1:
            out.append(Finding(str(path), "content changed since the manifest was written (sha1 mismatch)"))
    return out


def check_audio_file(path: Path, sample_rate: int | None, channels: int | None,
                     expected_frames: int | None = None) -> list[Finding]:
    """Read one file fully and report every fault (fatal) or all-silence (warning)."""
    try:
        info = audio_info(path)
        x, sr = read_audio(path)
    except AudioError as e:
        return [Finding(str(path), str(e).split(": ", 1)[-1])]
    if (short := wav_truncation(path)) is not None:
        return [Finding(str(path), short)]
    if len(x) != info.frames or (expected_frames is not None and len(x) != expected_frames):
        want = expected_frames if expected_frames is not None else info.frames
        return [Finding(str(path), f"truncated audio ({len(x)} of {want} frames readable)")]
    if len(x) == 0:
        return [Finding(str(path), "no audio frames")]
    if sample_rate is not None and sr != sample_rate:
        return [Finding(str(path), f"sample rate {sr} Hz, expected {sample_rate} Hz")]
    if channels is not None and x.shape[1] != channels:
        return [Finding(str(path), f"{x.shape[1]} channels, expected {channels}")]
    if not np.all(np.isfinite(x)):
        return [Finding(str(path), "contains NaN/Inf samples")]
    if rms_db(x) < SILENCE_DB:
        return [Finding(str(path), f"all-silent stem (RMS below {SILENCE_DB:.0f} dBFS)", fatal=False)]
    return []


def raise_first(findings: list[Finding]) -> None:
    """Warn about non-fatal findings; raise the first fatal one as a one-line StemSetError."""
    for f in findings:
        if not f.fatal:
            warnings.warn(str(f), stacklevel=2)
    fatal = [f for f in findings if f.fatal]
    if fatal:
        more = f" (+{len(fatal) - 1} more)" if len(fatal) > 1 else ""
        raise StemSetError(f"{fatal[0]}{more}")


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``target`` (in one atomic exchange where the
    OS has one), on failure it is removed. What a killed run left (its temp folder) is cleared first."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _clear_dead_runs(target)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists() and _exchange(tmp, target):  # tmp now holds the previous output
        shutil.rmtree(tmp, ignore_errors=True)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)  # a kill between these two renames leaves `old`: _clear_dead_runs restores it
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE): no instant without an output. False where the
    OS or filesystem cannot; the caller then falls back to two renames."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clear_dead_runs(target: Path) -> list[Path]:
    """Remove the temp folders of runs that were killed (their pid is gone); restore an output a killed run had
    moved aside but not yet replaced. A live pid's folder (a writer at work) is never touched. What was removed."""
    removed = []
    for p in target.parent.glob(f".{glob.escape(target.name)}.*-*"):
        kind, _, pid = p.name[len(target.name) + 2:].rpartition("-")
        if kind not in ("tmp", "old") or not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(int(pid)):
            continue
        if kind == "old" and not target.exists():
            os.replace(p, target)
        else:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def clear_dead_runs(target: str | Path) -> list[Path]:
    """:func:`_clear_dead_runs` for a reader: a folder it may not write (a read-only import) is left as it is."""
    try:
        return _clear_dead_runs(Path(target))
    except OSError:
        return []


STALE = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-\d+$")  # what atomic_dir / atomic_file leave while writing


def gc(roots: list[str | Path], depth: int = 3) -> list[Path]:
    """`stemsift gc`: clear what killed stage runs left in the output folders under ``roots`` (``depth`` levels
    down), whether or not their stage runs again: after `dvc repro` restored an output from its run-cache, nothing
    else would."""
    removed: list[Path] = []

    def walk(folder: Path, level: int) -> None:
        names = {m.group("name") for p in folder.iterdir() if (m := STALE.match(p.name))}
        for name in sorted(names):
            removed.extend(clear_dead_runs(folder / name))
        if level < depth:
            for p in sorted(folder.iterdir()):
                if p.is_dir() and not p.is_symlink() and not STALE.match(p.name):
                    walk(p, level + 1)

    for root in map(Path, roots):
        if root.is_dir():
            walk(root, 1)
    return removed


@contextlib.contextmanager
def atomic_file(target: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path; it is renamed onto ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _clear_dead_runs(target)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, target)
