"""Ingest a MoisesDB tree (`data.source` pointing at it): ``<root>/[<provider>/]<track uuid>/data.json`` with one
folder per instrument category, ``<track uuid>/<stemName>/<track id>.<extension>`` (moises-ai/moises-db's
layout and its `data.json`: artist, song, genre, stems[{stemName, tracks[{id, extension, trackType, has_bleed}]}]).

Categories map to the four MUSDB labels through `data.moisesdb.mapping` (label -> categories); every category
not mapped is summed into `other` (as moisesdb's `mix_4_stems`). Files of one category are summed; a track's
stems are cut to its shortest file (as moisesdb's `trim_and_mix`). MoisesDB has no splits: `test_tracks` and
`data.ingest.reference_tracks` songs are drawn (seeded) into test and reference, the rest is train. Every file
is checked before anything is written; the first fault is one line naming the file.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from stemsift import LABELS
from stemsift.audio import AudioError, match_channels, read_audio, resample
from stemsift.data.ingest import track_id_from_name
from stemsift.stemset import Finding, StemSetError, StemSetWriter, check_audio_file, fit_headroom, raise_first

DATA_JSON = "data.json"
DEFAULT_MAPPING = {"vocals": ["vocals"], "bass": ["bass"], "drums": ["drums"]}  # the rest -> other


def category(name: str) -> str:
    """'other keys' and 'other_keys' are one category (moisesdb names folders with underscores)."""
    return name.strip().lower().replace(" ", "_")


def track_folders(source: str | Path) -> list[Path]:
    """Track folders (holding data.json) directly under ``source`` or one provider folder down."""
    source = Path(source)
    found = sorted(p.parent for p in source.glob(f"*/{DATA_JSON}")) + sorted(p.parent for p in source.glob(f"*/*/{DATA_JSON}"))
    return [f for f in found if not any(part.startswith(".") for part in f.relative_to(source).parts)]


def is_moisesdb(source: str | Path) -> bool:
    return Path(source).is_dir() and bool(track_folders(source))


def resolve_mapping(mapping: dict | None) -> dict[str, str]:
    """category -> label; unknown labels or a category under two labels fail in one line."""
    out: dict[str, str] = {}
    for label, cats in (mapping if mapping is not None else DEFAULT_MAPPING).items():
        if label not in LABELS:
            raise StemSetError(f"data.moisesdb.mapping: unknown label {label!r} (use {', '.join(LABELS)})")
        for c in [cats] if isinstance(cats, str) else cats:
            if category(c) in out and out[category(c)] != label:
                raise StemSetError(f"data.moisesdb.mapping: category {c!r} is mapped to {out[category(c)]} and {label}")
            out[category(c)] = label
    return out


def read_meta(folder: Path) -> dict:
    path = folder / DATA_JSON
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise StemSetError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("stems"), list) or not meta["stems"]:
        raise StemSetError(f"{path}: no 'stems' list (not a MoisesDB data.json?)")
    return meta


def stem_files(folder: Path, meta: dict) -> list[tuple[str, Path, dict]]:
    """(category, file, track entry) of every source file the data.json lists; missing keys fail in one line."""
    out = []
    for stem in meta["stems"]:
        name = stem.get("stemName")
        if not name or not isinstance(stem.get("tracks"), list):
            raise StemSetError(f"{folder / DATA_JSON}: a stem without stemName or tracks")
        for t in stem["tracks"]:
            if "id" not in t or "extension" not in t:
                raise StemSetError(f"{folder / DATA_JSON}: a {name} track without id or extension")
            out.append((category(name), folder / name / f"{t['id']}.{t['extension']}", t))
    return out


def read_track(files: list[tuple[str, Path, dict]], to_label: dict[str, str], sample_rate: int,
               channels: int) -> dict[str, np.ndarray]:
    """The four stems at the target rate and channels: each category's files summed into its label."""
    sums: dict[str, list[np.ndarray]] = {lb: [] for lb in LABELS}
    for cat, path, _ in files:
        x, sr = read_audio(path)
        try:
            x = match_channels(x, channels)
        except AudioError as e:
            raise StemSetError(f"{path}: {e}") from None
        sums[to_label.get(cat, "other")].append(resample(x, sr, sample_rate))
    n = min(len(x) for xs in sums.values() for x in xs)
    return {lb: (np.sum([x[:n] for x in xs], axis=0) if xs else np.zeros((n, channels))).astype(np.float32)
            for lb, xs in sums.items()}


def assign_splits(ids: list[str], test: int, reference: int, seed: int) -> dict[str, str]:
    if test + reference >= len(ids):
        raise StemSetError(f"MoisesDB tree has {len(ids)} tracks: too few for {test} test + {reference} reference "
                           "tracks and at least one training track")
    order = np.random.default_rng(seed).permutation(sorted(ids))
    return {str(t): "test" if i < test else "reference" if i < test + reference else "train" for i, t in enumerate(order)}


def ingest_moisesdb(source: str | Path, writer: StemSetWriter, *, mapping: dict | None = None, test_tracks: int = 0,
                    reference_tracks: int = 0, seed: int = 0, headroom: float = 0.99) -> list[str]:
    """Check every file of every track, then write them all; returns the track ids written."""
    to_label = resolve_mapping(mapping)
    folders = track_folders(source)
    if not folders:
        raise StemSetError(f"{source}: no MoisesDB track folders (<track>/{DATA_JSON})")
    tracks = {}
    for f in folders:
        tid = track_id_from_name(f.name)
        if tid in tracks:
            raise StemSetError(f"{f}: duplicate track id {tid!r} (also {tracks[tid][0]})")
        meta = read_meta(f)
        tracks[tid] = (f, meta, stem_files(f, meta))
    findings = []
    for f, _, files in tracks.values():
        for _, path, _ in files:
            findings += check_audio_file(path, None, None) if path.is_file() else \
                [Finding(str(path), "listed in data.json but missing")]
    raise_first(findings)
    splits = assign_splits(list(tracks), int(test_tracks), int(reference_tracks), seed)
    for tid, (f, meta, files) in tracks.items():
        stems, gain = fit_headroom(read_track(files, to_label, writer.sample_rate, writer.channels), headroom)
        info = {"origin": str(f), "gain": gain, "dataset": "moisesdb", "artist": meta.get("artist", ""),
                "song": meta.get("song", ""), "genre": meta.get("genre", ""),
                "categories": sorted({c for c, _, _ in files}),
                "has_bleed": sorted({c for c, _, t in files if t.get("has_bleed")})}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            writer.add_track(tid, splits[tid], stems, meta=info)
    return list(tracks)
