"""MoisesDB ingest: a small generated tree in the MoisesDB layout ingests, validates and scores end to end."""
from __future__ import annotations

import json
import uuid

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from stemsift import LABELS
from stemsift.audio import resample
from stemsift.data.moisesdb import DATA_JSON, is_moisesdb
from stemsift.stages import contaminate, embed, prepare, score
from stemsift.stemset import StemSet, StemSetError

from conftest import band_noise

SR_IN, SR = 11025, 8000
# category -> (MoisesDB trackType, band): guitar and piano must end up summed into `other`
CATS = {"vocals": ("lead female singer", (300, 1200)), "bass": ("bass guitar", (40, 200)),
        "drums": ("kick drum", (2000, 4000)), "guitar": ("clean electric guitar", (800, 2000)),
        "piano": ("grand piano", (1000, 3000)), "other_keys": ("synth pad", (500, 900))}


def make_tree(root, n: int = 6) -> dict:
    """<root>/moisesdb_v0.1/<uuid>/{data.json, <category>/<uuid>.wav}; returns the audio written per track."""
    written = {}
    for i in range(n):
        rng = np.random.default_rng(i)
        tid = str(uuid.UUID(int=i + 1))
        folder = root / "moisesdb_v0.1" / tid
        cats = [c for c in CATS if not (i == 0 and c == "vocals")]  # track 0: instrumental (no vocals)
        stems, audio = [], {}
        for c in cats:
            entries = []
            for k in range(2 if c == "vocals" else 1):  # vocals: lead + a second take, summed
                fid = str(uuid.UUID(int=1000 * (i + 1) + len(audio)))
                frames = int(1.5 * SR_IN) + (37 if c == "piano" else 0)  # unequal lengths: cut to the shortest
                x = band_noise(rng, frames, 2, SR_IN, CATS[c][1], 0.1)
                (folder / c).mkdir(parents=True, exist_ok=True)
                sf.write(str(folder / c / f"{fid}.wav"), x, SR_IN, subtype="FLOAT")
                audio[fid] = (c, x)
                entries.append({"id": fid, "extension": "wav", "trackType": CATS[c][0], "has_bleed": c == "drums"})
            stems.append({"stemName": c, "id": f"s{i}{c}", "tracks": entries})
        (folder / DATA_JSON).write_text(json.dumps({"artist": f"Artist {i}", "song": f"Song {i}", "genre": "pop",
                                                    "stems": stems}))
        written[tid.replace("-", "_")] = audio
    return written


def params_for(src, out) -> dict:
    return {"_path": "params.yaml",
            "data": {"source": str(src), "sample_rate": SR, "channels": 2, "out": str(out / "raw"),
                     "ingest": {"reference_tracks": 2}, "moisesdb": {"test_tracks": 1}},
            "contaminate": {"preset": "mixed", "out": str(out / "contaminated")},
            "embed": {"embedder": "mel", "out": str(out / "emb"), "mel": {"n_fft": 512, "hop": 256, "n_mels": 32}},
            "score": {"cleaner": "fad", "cleaners": ["random", "fad"], "out": str(out / "scores")}}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    root = tmp_path_factory.mktemp("moises")
    written = make_tree(root / "moisesdb")
    params = params_for(root / "moisesdb", root)
    ss = prepare.run(params)
    return root, params, ss, written


def test_tree_ingests_maps_categories_and_validates(ingested):
    root, params, ss, written = ingested
    assert is_moisesdb(root / "moisesdb") and not is_moisesdb(root)
    assert sorted(ss.track_ids()) == sorted(written)
    assert ss.tracks.split.value_counts().to_dict() == {"train": 3, "reference": 2, "test": 1}
    assert not [f for f in ss.validate(deep=True) if f.fatal]
    tid = sorted(written)[1]
    gain = ss.meta(tid)["gain"]
    expect = {lb: 0 for lb in LABELS}
    for c, x in written[tid].values():
        lb = c if c in ("vocals", "bass", "drums") else "other"   # guitar, piano, other_keys -> other
        expect[lb] = expect[lb] + resample(x[: int(1.5 * SR_IN)], SR_IN, SR)
    for lb in LABELS:
        got = ss.load(tid, lb)
        assert got.shape == expect[lb].shape  # cut to the shortest file
        edge = 64  # the longer piano file was resampled before the cut: its last samples differ slightly
        assert np.max(np.abs(got - gain * expect[lb])[:-edge]) < 2e-4, lb
    meta = ss.meta(tid)
    assert meta["dataset"] == "moisesdb" and meta["artist"] == "Artist 1" and meta["has_bleed"] == ["drums"]
    assert set(meta["categories"]) == set(CATS)
    instrumental = str(uuid.UUID(int=1)).replace("-", "_")
    assert bool(ss.stems.set_index(["track_id", "label"]).silent[(instrumental, "vocals")])


def test_mapping_from_params_moves_a_category(ingested, tmp_path):
    root, params, _, written = ingested
    p = params_for(root / "moisesdb", tmp_path)
    p["data"]["moisesdb"]["mapping"] = {"vocals": ["vocals"], "bass": ["bass", "piano"], "drums": ["drums"]}
    ss = prepare.run(p)
    tid = sorted(written)[1]
    base = StemSet(root / "raw")
    energy = lambda s, lb: float(np.mean(s.load(tid, lb) ** 2) / s.meta(tid)["gain"] ** 2)  # noqa: E731
    assert energy(ss, "bass") > 1.3 * energy(base, "bass") and energy(ss, "other") < 0.8 * energy(base, "other")


def test_faults_are_one_line_naming_the_file(ingested, tmp_path):
    root, _, _, _ = ingested
    src = tmp_path / "m"
    make_tree(src, n=4)
    folder = sorted((src / "moisesdb_v0.1").iterdir())[2]
    victim = sorted((folder / "bass").iterdir())[0]
    victim.unlink()
    with pytest.raises(StemSetError, match=f"{victim}: listed in data.json but missing"):
        prepare.run(params_for(src, tmp_path / "o1"))
    (folder / DATA_JSON).write_text("{not json")
    with pytest.raises(StemSetError, match=f"{folder / DATA_JSON}: not valid JSON"):
        prepare.run(params_for(src, tmp_path / "o2"))
    p = params_for(root / "moisesdb", tmp_path / "o3")
    p["data"]["moisesdb"]["mapping"] = {"vocals": ["vocals"], "bass": ["piano"], "other": ["piano"]}
    with pytest.raises(StemSetError, match="category 'piano' is mapped to bass and other"):
        prepare.run(p)


def test_ingested_tree_scores_end_to_end(ingested, monkeypatch):
    root, params, _, _ = ingested
    monkeypatch.chdir(root)
    monkeypatch.setenv("STEMSIFT_CACHE", str(root / "memo"))
    contaminate.run(params)
    embed.run(params)
    tables = score.run(params)
    train = StemSet(root / "contaminated").track_ids("train")
    for name in ("random", "fad"):
        t = pd.read_parquet(root / "scores" / f"scores-{name}.parquet")
        assert sorted(set(t.track_id)) == sorted(train) and len(t) == len(train) * 4
        assert np.isfinite(t.score).all() and name in tables
    assert "fad" in json.loads((root / "metrics/cleaning.json").read_text())
