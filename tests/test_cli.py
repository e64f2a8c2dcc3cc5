import subprocess
import sys

import pytest
import yaml

from stemsift.cli import main

from conftest import make_stems, write_input_track


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # stages write metrics/ relative to the cwd: keep the repo's own untouched


def _params(tmp_path, **data):
    p = {"data": {"source": "synthetic", "sample_rate": 8000, "out": str(tmp_path / "raw"), **data}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    return str(tmp_path / "params.yaml")


def test_bad_folder_fails_in_one_line_and_keeps_previous_output(tmp_path, capsys):
    good, bad = tmp_path / "good", tmp_path / "bad"
    for i in range(3):
        write_input_track(good / "train" / f"song{i}", make_stems(i, sr=8000), 8000)
        write_input_track(bad / "train" / f"song{i}", make_stems(i, sr=8000), 8000)
    (bad / "train" / "song1" / "bass.wav").write_bytes(b"RIFF....garbage")
    assert main(["prepare", "--params", _params(tmp_path, source=str(good), ingest={"reference_tracks": 0})]) == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "raw").rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["prepare", "--params", _params(tmp_path, source=str(bad), ingest={"reference_tracks": 0})]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bass.wav" in err and "unreadable audio" in err
    after = {p.name: p.read_bytes() for p in (tmp_path / "raw").rglob("*") if p.is_file()}
    assert after == before
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


@pytest.mark.parametrize("data,message", [
    ({"sample_rat": 8000}, "data.sample_rat: unknown key"),
    ({"channels": 6}, "data.channels: must be 1 or 2"),
    ({"synthetic": {"tracks": {"dev": 3}}}, "data.synthetic.tracks: unknown split 'dev'"),
    ({"source": "/no/such/folder"}, "/no/such/folder"),
])
def test_bad_params_are_one_line(tmp_path, capsys, data, message):
    assert main(["prepare", "--params", _params(tmp_path, **data)]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_validate_and_help_from_the_installed_command(tmp_path):
    out = subprocess.run([sys.executable, "-m", "stemsift.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and all(s in out.stdout for s in ("prepare", "contaminate", "catalogue"))
    bad = subprocess.run([sys.executable, "-m", "stemsift.cli", "validate", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 1 and "manifest.parquet: missing" in bad.stderr


def test_errors_name_the_key_the_user_wrote(tmp_path, capsys, monkeypatch):
    import torch

    from stemsift.separate.model import resolve_device

    good = tmp_path / "good"
    for i in range(2):
        write_input_track(good / "test" / f"song{i}", make_stems(i, sr=8000), 8000)
    assert main(["prepare", "--params", _params(tmp_path, source=str(good), ingest={"reference_tracks": 5})]) == 1
    assert "data.ingest.reference_tracks=5" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for key in ("train.device", "refine.device", "embed.device", "unlearning.device"):
        with pytest.raises(ValueError, match=rf"^{key} is 'cuda' but no CUDA device"):
            resolve_device("cuda", key)
