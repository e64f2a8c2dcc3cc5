"""MLflow tracking: runs written to a temporary repo root and read back (each new sqlite db costs a few seconds)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from stemsift.tracking import (MAX_PARAM_LEN, TrainingRun, dvc_out_hash, flatten, git_commit, read_run,
                               tracking_uri)

PARAMS = {"train": {"epochs": 2, "model": {"hidden_size": 16, "nb_layers": 1}, "targets": ["vocals", "bass"]},
          "seed": 0}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """One repo root (hence one mlflow.db) shared by the module's tests, created by the first run."""
    return tmp_path_factory.mktemp("repo")


@pytest.fixture(autouse=True)
def _no_user_uri(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for var in ("DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "DVC_STAGE"):
        monkeypatch.delenv(var, raising=False)


def test_flatten():
    flat = flatten({**PARAMS, "empty": {}, "none": None, "long": "x" * (MAX_PARAM_LEN + 10)})
    assert flat["train.model.hidden_size"] == "16" and flat["seed"] == "0"
    assert json.loads(flat["train.targets"]) == ["vocals", "bass"]
    assert flat["empty"] == "{}" and flat["none"] == "None"
    assert len(flat["long"]) == MAX_PARAM_LEN
    assert flatten({"a": {"b": 1}}, sep="/") == {"a/b": "1"}
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
    assert MAX_PARAM_LEN == MAX_PARAM_VAL_LENGTH


def test_tracking_uri_default_is_repo_root(tmp_path, monkeypatch):
    assert tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve().as_posix()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/x.db")
    assert tracking_uri(tmp_path) == "sqlite:////elsewhere/x.db"


def test_run_roundtrip(repo, tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "exp-abc")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    lin = torch.nn.Linear(3, 2)
    torch.save(lin.state_dict(), model_dir / "separator.pt")
    (model_dir / "separator.json").write_text(json.dumps({"hidden_size": 16}))
    tags = {"stemset": "data/contaminated", "stemset_hash": "aa7afba1577f1cea7a8bbbc57473bc09.dir"}
    with TrainingRun("umx-contaminated", params=PARAMS, tags=tags, repo_root=repo) as run:
        for epoch, (tr, va) in enumerate([(3.0, 2.5), (2.0, 1.9), (1.5, 1.7)]):
            run.log_epoch(epoch, train_loss=tr, valid_loss=va, lr=1e-3 / (epoch + 1))
        run.log_metrics({"sdr_vocals": 4.25, "sdr_bass": 1.5})
        run.log_model_dir(model_dir)
    assert (repo / "mlflow.db").is_file() and (repo / "mlruns").is_dir()
    r = read_run(run.run_id, repo)
    assert r["status"] == "FINISHED"
    assert r["params"] == flatten(PARAMS)
    assert r["history"]["train_loss"] == [(0, 3.0), (1, 2.0), (2, 1.5)]
    assert r["history"]["valid_loss"] == [(0, 2.5), (1, 1.9), (2, 1.7)]
    assert [s for s, _ in r["history"]["lr"]] == [0, 1, 2]
    assert r["metrics"]["sdr_vocals"] == 4.25 and r["metrics"]["valid_loss"] == 1.7
    assert r["tags"]["stemset"] == "data/contaminated" and r["tags"]["stemset_hash"].endswith(".dir")
    assert r["tags"]["dvc_exp_name"] == "exp-abc" and r["tags"]["git_commit"] == "none"
    assert r["tags"]["mlflow.runName"] == "umx-contaminated" and r["tags"]["host"] and r["tags"]["device"]
    assert r["artifacts"] == ["model/separator.json", "model/separator.pt"]
    # Artifacts live under <repo>/mlruns/<experiment id>/<run id>/ and load back identically.
    import mlflow
    dst = Path(mlflow.MlflowClient(tracking_uri(repo)).download_artifacts(run.run_id, "model", str(tmp_path / "dl")))
    assert dst.resolve().is_relative_to(tmp_path) and list((repo / "mlruns").glob(f"*/{run.run_id}"))
    state = torch.load(dst / "separator.pt", weights_only=True)
    assert state.keys() == lin.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in lin.state_dict().items())
    assert json.loads((dst / "separator.json").read_text()) == {"hidden_size": 16}


def test_failed_block_marks_run_failed_and_next_run_works(repo):
    with pytest.raises(RuntimeError, match="diverged"):
        with TrainingRun("umx-broken", params={"a": 1}, repo_root=repo) as run:
            run.log_epoch(0, train_loss=float("nan"))
            raise RuntimeError("diverged")
    assert read_run(run.run_id, repo)["status"] == "FAILED"
    with TrainingRun("umx-after", repo_root=repo) as again:  # same process, same db: no stale active run
        again.log_epoch(0, train_loss=1.0)
    assert again.run_id != run.run_id and read_run(again.run_id, repo)["status"] == "FINISHED"
    import mlflow
    runs = mlflow.MlflowClient(tracking_uri(repo)).search_runs(
        [mlflow.MlflowClient(tracking_uri(repo)).get_experiment_by_name("stemsift").experiment_id])
    assert {r.info.run_id for r in runs} >= {run.run_id, again.run_id}


def test_env_tracking_uri_wins(tmp_path, monkeypatch):
    other = tmp_path / "elsewhere" / "runs.db"
    other.parent.mkdir()
    assert not other.exists()  # also covers the first run against a database that does not exist yet
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{other}")
    with TrainingRun("umx-env", experiment="env-test", params={"x": 1}, repo_root=tmp_path / "repo") as run:
        run.log_metrics({"sdr_vocals": 1.0})
    assert other.is_file() and not (tmp_path / "repo" / "mlflow.db").exists()
    assert read_run(run.run_id, tmp_path / "repo")["metrics"] == {"sdr_vocals": 1.0}


def test_dvc_out_hash(tmp_path):
    lock = {"schema": "2.0", "stages": {
        "prepare": {"cmd": "stemsift prepare",
                    "deps": [{"path": "src/stemsift/audio.py", "hash": "md5", "md5": "a" * 32, "size": 4343}],
                    "outs": [{"path": "data/raw", "hash": "md5", "md5": "3c2f54141e6b8be9d9f3dd1223c0386e.dir",
                              "size": 345478917, "nfiles": 702}]},
        "contaminate": {"cmd": "stemsift contaminate",
                        "outs": [{"path": "data/contaminated", "hash": "md5",
                                  "md5": "aa7afba1577f1cea7a8bbbc57473bc09.dir", "size": 353250494, "nfiles": 703},
                                 {"path": "metrics/contamination.json", "hash": "md5",
                                  "md5": "266ac5078b7be2f30ed1d6abb8c5ec96", "size": 812}]}}}
    lock_file = tmp_path / "dvc.lock"
    lock_file.write_text(yaml.safe_dump(lock, sort_keys=False))
    assert dvc_out_hash("data/contaminated", lock_file) == "aa7afba1577f1cea7a8bbbc57473bc09.dir"
    assert dvc_out_hash("./data/contaminated/", lock_file) == "aa7afba1577f1cea7a8bbbc57473bc09.dir"
    assert dvc_out_hash(str(tmp_path / "data" / "raw"), lock_file) == "3c2f54141e6b8be9d9f3dd1223c0386e.dir"
    assert dvc_out_hash("metrics/contamination.json", lock_file) == "266ac5078b7be2f30ed1d6abb8c5ec96"
    assert dvc_out_hash("src/stemsift/audio.py", lock_file) is None  # a dep, not an output
    assert dvc_out_hash("data/unknown", lock_file) is None
    assert dvc_out_hash("data/raw", tmp_path / "missing.lock") is None


def test_git_commit(tmp_path):
    assert git_commit(tmp_path) is None
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "a.txt").write_text("1")
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert git_commit(tmp_path) == head and len(head) == 40
    (tmp_path / "untracked.txt").write_text("x")  # untracked files do not make it dirty
    assert git_commit(tmp_path) == head
    (tmp_path / "a.txt").write_text("2")
    assert git_commit(tmp_path) == head + "-dirty"
