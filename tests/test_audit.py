"""Audit: a generated set with a song copied into test/, a near duplicate (gain change + small shift) and a
broken mixture reports exactly those (and the catalogue and metrics carry them)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from stemsift import LABELS, MIXTURE
from stemsift.audio import write_audio
from stemsift.data.audit import audit, content_hash, fingerprint, lagged_similarity
from stemsift.stages import audit as audit_stage
from stemsift.stemset import StemSet, StemSetWriter

from conftest import BANDS, band_noise

SR = 8000


def music_like(seed: int, seconds: float = 3.0) -> dict[str, np.ndarray]:
    """Band noise per label under a random note-like gate (50-300 ms events): structure in time, as music has."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    out = {}
    for lb in LABELS:
        gate, t = np.zeros(n), 0
        while t < n:
            d = int(rng.uniform(0.05, 0.3) * SR)
            gate[t:t + d] = rng.uniform(0.2, 1.0) if rng.random() < 0.7 else 0.0
            t += d
        gate = np.convolve(gate, np.hanning(81) / np.hanning(81).sum(), mode="same")
        out[lb] = (band_noise(rng, n, 1, SR, BANDS[lb], 0.2)[:, 0] * gate)[:, None].astype(np.float32)
    return out


def build(root):
    w = StemSetWriter(root, SR, 1)
    songs = {}
    for split, n, base in (("train", 5, 0), ("reference", 2, 50), ("test", 2, 80)):
        for i in range(n):
            songs[f"{split}-{i}"] = music_like(base + i)
            w.add_track(f"{split}-{i}", split, songs[f"{split}-{i}"])
    w.add_track("test-copy", "test", songs["train-0"])                      # the same song again, in test/
    shift = int(0.12 * SR)                                                   # 120 ms later, 6 dB quieter
    w.add_track("test-near", "test", {lb: 0.5 * np.concatenate([np.zeros((shift, 1), np.float32), x[:-shift]])
                                      for lb, x in songs["train-1"].items()})
    ss = w.close()
    broken = ss.load_track("train-2")
    write_audio(ss.stem_path("train-2", MIXTURE), broken["vocals"] + broken["drums"] + broken["other"], SR)  # no bass
    return StemSet(root)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build(tmp_path_factory.mktemp("audit") / "raw")


def test_audit_reports_exactly_the_planted_faults(world):
    table, m = audit(world)
    got = sorted((r.kind, r.track_id, None if pd.isna(r.other_track_id) else r.other_track_id, bool(r.leak))
                 for r in table.itertuples())
    assert got == [("bad_mixture", "train-2", None, False),
                   ("duplicate_song", "train-0", "test-copy", True),
                   ("near_duplicate_song", "train-1", "test-near", True)], got
    near = table[table.kind == "near_duplicate_song"].value.iloc[0]
    mix = table[table.kind == "bad_mixture"].value.iloc[0]
    assert near > 0.9 and m["near_max_unflagged"] < 0.5 and -10 < mix < 0  # bass is ~1/4 of the energy
    assert m["train_test_leaks"] == 2 and m["leaks"] == 2 and m["silent_stem"] == 0 and m["clipped_stem"] == 0


def test_silent_clipped_and_shared_stems(tmp_path):
    w = StemSetWriter(tmp_path / "s", SR, 1)
    a, b = music_like(1), music_like(2)
    w.add_track("train-a", "train", a)
    w.add_track("train-b", "train", {**b, "drums": a["drums"]})              # one stem reused by another song
    c = music_like(3)
    c["vocals"] = np.zeros_like(c["vocals"])
    for lb in ("bass", "drums", "other"):
        c[lb][1000:1040] = 0.0
    c["bass"][1000:1040] = 32767 / 32768                                     # 40 samples stuck at full scale
    w.add_track("test-c", "test", c)
    table, m = audit(w.close())
    got = sorted((r.kind, r.track_id, r.label, None if pd.isna(r.other_track_id) else r.other_track_id)
                 for r in table.itertuples())
    assert got == [("clipped_stem", "test-c", "bass", None), ("duplicate_stem", "train-a", "drums", "train-b"),
                   ("silent_stem", "test-c", "vocals", None)], got


def test_fingerprint_is_gain_and_shift_robust_and_hash_is_format_free(tmp_path):
    x = music_like(7)["drums"]
    fa, ga = fingerprint(x, SR)
    fb, gb = fingerprint(0.25 * np.roll(x, 400), SR)
    assert lagged_similarity(fa, fb, 60) > 0.95 and float(ga @ gb) > 0.99
    fc, _ = fingerprint(music_like(8)["drums"], SR)
    assert lagged_similarity(fa, fc, 60) < 0.5
    assert content_hash(x) == content_hash(x.astype(np.float64)) != content_hash(0.5 * x)


def test_stage_writes_catalogue_table_and_metrics(world, tmp_path, monkeypatch):
    from stemsift.catalogue import build_catalogue, query

    monkeypatch.chdir(tmp_path)
    audit_stage.run({"data": {"out": str(world.root)}, "audit": {"out": "data/audit"}})
    m = json.loads((tmp_path / "metrics/audit.json").read_text())
    assert (m["duplicate_song"], m["near_duplicate_song"], m["bad_mixture"]) == (1, 1, 1)
    db = build_catalogue(tmp_path / "c.duckdb", {"raw": world.root}, {"audit": ["data/audit/audit.parquet"]})
    leaks = query(db, "SELECT track_id, other_track_id FROM audit WHERE leak ORDER BY 1")
    assert leaks.values.tolist() == [["train-0", "test-copy"], ["train-1", "test-near"]]


def test_prepare_warns_when_the_same_song_is_in_train_and_test(input_folder, tmp_path):
    import shutil

    from stemsift.stages import prepare

    shutil.copytree(input_folder / "train" / "Artist 0 - Song", input_folder / "test" / "Artist 0 - Song (copy)")
    params = {"data": {"source": str(input_folder), "sample_rate": SR, "channels": 2, "out": str(tmp_path / "raw"),
                       "ingest": {"reference_tracks": 1}}}
    with pytest.warns(UserWarning, match=r"identical songs test/artist_0_song_copy, train/artist_0_song \(across splits: leakage\)"):
        prepare.run(params)
