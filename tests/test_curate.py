"""The curate-only path (`stemsift curate <folder>`, curate/dvc.yaml) on a generated MUSDB18-HQ-layout folder:
the cleaned set, the listening report, metrics/filter.json and an export, with no separator trained and no truth."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from conftest import make_stems, write_input_track
from stemsift.cli import main

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SR = 22050  # not the set's 16 kHz: ingest resamples


def musdb_folder(root: Path, songs: int, seconds: float = 3.0) -> Path:
    """train/<song>/{mixture,vocals,drums,bass,other}.wav, 16-bit stereo; a third of the songs with drums bleeding
    into vocals at -6 dB (something for the cleaners to find)."""
    for i in range(songs):
        stems = make_stems(i, seconds=seconds, sr=SR, channels=2)
        if i % 3 == 2:
            stems["vocals"] = stems["vocals"] + 0.5 * stems["drums"]
        folder = write_input_track(root / "train" / f"Artist {i} - Song {i}", stems, SR)
        sf.write(str(folder / "mixture.wav"), sum(stems.values()), SR, subtype="PCM_16")
    return root


def run(cmd: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, shell=True)


def repo_copy(dst: Path) -> Path:
    """A fresh git+DVC repository with this repository's pipelines, code and params (what a clone holds)."""
    dst.mkdir()
    for name in ("dvc.yaml", "params.yaml", "src", ".gitignore", "verdicts"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, dst / name)
    (dst / "curate").mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / "curate" / name, dst / "curate" / name)
    out = run("git init -q && dvc init -q && dvc config core.analytics false && git add -A && git commit -qm init", dst)
    assert out.returncode == 0, out.stderr
    return dst


@pytest.mark.slow
def test_curate_own_folder_trains_nothing(tmp_path):
    data = musdb_folder(tmp_path / "musdb", 12)
    repo = repo_copy(tmp_path / "repo")
    out = run(f"stemsift curate {data}", repo)
    assert out.returncode == 0, out.stdout + out.stderr
    ws = repo / "curate"
    assert "2 seeded-random train songs are the clean reference" in out.stdout  # no reference given: a fifth of 12
    assert (ws / "data/filtered/manifest.parquet").is_file() and (ws / "data/filtered/selections.parquet").is_file()
    assert (ws / "reports/listen/index.html").stat().st_size > 0
    assert (ws / "exports/cleaned/README.md").is_file() and len(list((ws / "exports/cleaned/train").iterdir())) > 0
    assert (ws / "data/catalogue.duckdb").is_file()
    filt = json.loads((ws / "metrics/filter.json").read_text())
    assert filt["baseline_songs"] == 10 and 0 < filt["cleaned_songs"] <= 10 and filt["ratio"] == filt["ratio_auto"]
    assert not {"clean_share", "clean_kept"} & set(filt)  # truth metrics are absent, not errors
    cleaning = json.loads((ws / "metrics/cleaning.json").read_text())
    assert set(cleaning) == {"random", "level", "fad", "leak", "degrade", "blind"}
    assert all("song_auc" not in m for m in cleaning.values())
    # no separator was trained: no train stage, no models, no MLflow runs, no contaminated copy or truth
    ran = {line.split("'")[1] for line in out.stdout.splitlines() if line.startswith("Running stage")}
    assert ran == {"prepare", "embed", "score", "select", "filter", "audit", "listen", "catalogue", "export"}
    assert set(yaml.safe_load((ws / "dvc.lock").read_text())["stages"]) == ran
    assert not any(p.exists() for p in (repo / "models", ws / "models", repo / "mlruns", ws / "mlruns", ws / "mlflow.db",
                                        repo / "mlflow.db", repo / "data", ws / "data/contaminated"))
    assert not list(repo.rglob("truth.parquet"))
    again = run(f"stemsift curate {data}", repo)  # nothing changed: nothing runs again
    assert again.returncode == 0 and "Running stage" not in again.stdout, again.stdout + again.stderr
    # a sample fault only decoding finds fails inside the prepare stage: its one line comes back, exit 1
    bad = data / "train" / "Artist 0 - Song 0" / "other.wav"
    sf.write(str(bad), np.full((SR, 2), np.nan, dtype=np.float32), SR, subtype="FLOAT")
    out = run(f"stemsift curate {data}", repo)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [f"stemsift curate: error: {bad}: contains NaN/Inf samples"]


@pytest.fixture
def workspace(tmp_path):
    ws = tmp_path / "curate"
    shutil.copytree(REPO / "curate", ws, ignore=shutil.ignore_patterns("data", "metrics", "reports", "exports", "dvc.lock"))
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")  # what curate/params.yaml extends
    return ws


@pytest.mark.parametrize("fault", ["missing stem", "not audio", "unknown stem name", "no splits", "reference list"])
def test_bad_folder_is_one_line_naming_the_file(tmp_path, workspace, capsys, fault):
    data = musdb_folder(tmp_path / "musdb", 3, seconds=0.5)
    song = data / "train" / "Artist 1 - Song 1"
    before = (workspace / "params.yaml").read_text()
    if fault == "missing stem":
        (song / "bass.wav").unlink()
        where, what = song, "missing stem 'bass'"
    elif fault == "not audio":
        (song / "drums.wav").write_text("drums, as text\n")
        where, what = song / "drums.wav", "unreadable audio"
    elif fault == "unknown stem name":
        shutil.copy(song / "bass.wav", song / "guitar.wav")
        where, what = song / "guitar.wav", "unknown stem name 'guitar'"
    elif fault == "no splits":
        data = song
        where, what = song, "no split folders"
    else:
        (data / "reference.txt").write_text("Artist 0 - Song 0\nArtist 9 - Song 9  # not there\n")
        where, what = f"{data / 'reference.txt'}:2", "unknown song 'Artist 9 - Song 9'"
    assert main(["curate", str(data), "--workspace", str(workspace)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"stemsift curate: error: {where}") and what in err[0], err
    assert (workspace / "params.yaml").read_text() == before  # nothing configured, nothing run


def test_separator_cleaners_are_opt_in(tmp_path, workspace, capsys):
    data = musdb_folder(tmp_path / "musdb", 3, seconds=0.5)
    assert main(["curate", str(data), "--workspace", str(workspace), "--cleaners", "fad", "loss"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cleaner 'loss' needs a trained baseline separator" in err[0]
    assert f"{workspace}/models/baseline" in err[0]


def test_curate_params_extend_the_demo_params():
    from stemsift.params import load_params

    root, cur = load_params(REPO / "params.yaml"), load_params(REPO / "curate/params.yaml")
    assert cur["cleaners"] == root["cleaners"] and cur["embed"] == root["embed"]  # inherited key by key
    assert cur["data"]["sample_rate"] == root["data"]["sample_rate"] and cur["data"]["ingest"]["reference_from"] == "auto"
    assert cur["contaminate"]["out"] == cur["data"]["out"]  # the stages read the ingested set itself
    assert not {"loss", "unlearning"} & set(cur["score"]["cleaners"])


def test_reference_songs_from_a_list_or_drawn(tmp_path):
    from stemsift.data.ingest import InputTrack, assign_reference, ingest
    from stemsift.stemset import StemSetWriter

    data = musdb_folder(tmp_path / "musdb", 3, seconds=0.5)
    (data / "reference.txt").write_text("# songs I trust\nArtist 1 - Song 1\n")
    w = StemSetWriter(tmp_path / "set", 16000, 1)
    ingest(data, w, reference_tracks=20, reference_from="auto")
    ss = w.close()
    assert ss.track_ids("reference") == ["artist_1_song_1"] and len(ss.track_ids("train")) == 2

    def tracks(train: int, test: int) -> list:
        return [InputTrack(f"{s}{i}", s, tmp_path) for s, n in (("train", train), ("test", test)) for i in range(n)]

    for train, test, split, moved in ((12, 0, "train", 2), (200, 0, "train", 20), (100, 50, "test", 20), (100, 10, "train", 20)):
        ts = tracks(train, test)
        note = assign_reference(ts, 20, "auto", seed=0)
        ref = [t for t in ts if t.split == "reference"]
        assert len(ref) == moved and all(t.track_id.startswith(split) for t in ref), (train, test)
        assert f"{moved} seeded-random {split} songs" in note
