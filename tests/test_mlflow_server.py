"""An MLflow tracking server on PostgreSQL with artifacts on the S3 API, all on 127.0.0.1: stemsift's tracking
helpers log complete runs there when MLFLOW_TRACKING_URI points at it, also from two processes at once."""
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from services import pg_bin, postgres, psql, s3_keys, s3_server, mlflow_server

BUCKET = "mlflow"
SRC = Path(__file__).resolve().parents[1] / "src"

# One training's worth of tracking, as stages/train.py does it: params, per-epoch losses, the model folder,
# then the evaluate stage's final metrics on the finished run.
CHILD = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from stemsift.tracking import TrainingRun, log_final_metrics
    name, folder = sys.argv[1], Path(sys.argv[2])
    folder.mkdir(parents=True)
    (folder / "vocals.pth").write_bytes(name.encode() * 1000)
    (folder / "separator.json").write_text(json.dumps({"name": name}))
    with TrainingRun(name, params={"train": {"lr": 0.001, "seeds": [0]}, "set": name},
                     tags={"stemset_hash": "abc.dir"}, repo_root=folder) as run:
        for epoch in range(3):
            run.log_epoch(epoch, train_loss=1.0 / (epoch + 1), valid_loss=2.0 / (epoch + 1))
        run.log_model_dir(folder, "model")
    log_final_metrics(run.run_id, {"sdr_avg": 4.5, "sdr_vocals": float("nan")}, repo_root=folder)
    print("RUN_ID=" + run.run_id)
""")

needs_postgres = pytest.mark.skipif(pg_bin("initdb") is None, reason="PostgreSQL is not installed (make setup)")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("mlflow-server")
    with s3_server(work, buckets=(BUCKET,)) as s3, postgres(work) as db, \
            mlflow_server(work, db, f"s3://{BUCKET}/artifacts", s3) as uri:
        yield {"uri": uri, "db": db, "s3": s3}


def _start(name: str, tmp: Path, uri: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}  # the client never needs S3 keys
    env.update({"MLFLOW_TRACKING_URI": uri, "PYTHONPATH": os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])})
    return subprocess.Popen([sys.executable, "-c", CHILD, name, str(tmp / name)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    return out.split("RUN_ID=")[1].strip()


@needs_postgres
def test_two_concurrent_trainings_log_complete_runs(server, tmp_path, monkeypatch):
    procs = [_start(name, tmp_path, server["uri"]) for name in ("baseline", "cleaned")]  # both at once
    run_ids = [_finish(p) for p in procs]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server["uri"])
    from stemsift.tracking import read_run

    for name, run_id in zip(("baseline", "cleaned"), run_ids):
        run = read_run(run_id)
        assert run["status"] == "FINISHED"
        assert run["params"]["train.lr"] == "0.001" and run["params"]["set"] == name
        assert run["tags"]["stemset_hash"] == "abc.dir" and run["tags"]["mlflow.runName"] == name
        assert [v for _, v in run["history"]["train_loss"]] == [1.0, 0.5, 1 / 3]
        assert run["metrics"]["sdr_avg"] == 4.5 and "sdr_vocals" not in run["metrics"]  # NaN not logged
        assert run["artifacts"] == ["model/separator.json", "model/vocals.pth"]
    # Both runs are in PostgreSQL in one experiment (created once, though two processes raced for it) ...
    rows = psql(server["db"], "SELECT r.name, r.status, e.name FROM runs r JOIN experiments e "
                              "ON r.experiment_id = e.experiment_id ORDER BY r.name")
    assert rows.splitlines() == ["baseline|FINISHED|stemsift", "cleaned|FINISHED|stemsift"]
    # ... and their model files in the S3 bucket, behind the server's artifact proxy.
    keys = s3_keys(server["s3"], BUCKET, "artifacts/")
    for run_id in run_ids:
        assert {k.rsplit("/", 1)[1] for k in keys if f"/{run_id}/" in k} == {"separator.json", "vocals.pth"}
    import mlflow
    got = mlflow.MlflowClient(server["uri"]).download_artifacts(run_ids[1], "model/separator.json", str(tmp_path))
    assert json.loads(Path(got).read_text()) == {"name": "cleaned"}


# A one-stage DVC pipeline whose stage is a training's tracking (stemsift.tracking, as stages/train.py uses it);
# the sleep makes two experiments overlap when the queue really runs them side by side.
STAGE = textwrap.dedent("""
    import json, time, yaml
    from pathlib import Path
    from stemsift.tracking import TrainingRun
    p = yaml.safe_load(open("params.yaml"))["train"]
    Path("model").mkdir(exist_ok=True)
    Path("model/weights.txt").write_text(str(p))
    with TrainingRun(f"lr{p['lr']}", params={"train": p}, repo_root=".") as run:
        for epoch in range(3):
            time.sleep(2)
            run.log_epoch(epoch, train_loss=p["lr"] * (3 - epoch))
        run.log_model_dir("model", "model")
    Path("metrics.json").write_text(json.dumps({"run_id": run.run_id}))
""")
DVC_YAML = """stages:
  train:
    cmd: python train.py
    deps: [train.py]
    params: [train]
    outs: [model]
    metrics:
      - metrics.json:
          cache: false
"""


@needs_postgres
@pytest.mark.slow
def test_two_queued_dvc_experiments_run_at_once_and_log_to_the_server(server, tmp_path):
    repo = tmp_path / "exp-repo"
    repo.mkdir()
    (repo / "train.py").write_text(STAGE)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    (repo / "params.yaml").write_text("train: {lr: 0.001, epochs: 3}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"MLFLOW_TRACKING_URI": server["uri"], "DVC_NO_ANALYTICS": "1",
                "PATH": f"{Path(sys.executable).parent}:{env['PATH']}",
                "PYTHONPATH": os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]),
                "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                "GIT_COMMITTER_EMAIL": "t@t"})

    def sh(cmd: str) -> str:
        out = subprocess.run(cmd, cwd=repo, env=env, shell=True, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"{cmd}\n{out.stdout}\n{out.stderr}"
        return out.stdout

    sh("git init -q && dvc init -q && dvc config core.analytics false && printf 'model\\n' > .gitignore "
       "&& git add -A && git commit -qm init")
    sh("dvc exp run --queue -S train.lr=0.1,0.2")
    try:
        sh("dvc queue start -j 2")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            status = sh("dvc queue status")
            if "Queued" not in status and "Running" not in status:
                break
            time.sleep(2)
        assert "Success" in status and "Failed" not in status, status
    finally:
        subprocess.run("dvc queue stop --kill", cwd=repo, env=env, shell=True, capture_output=True, timeout=60)
    import mlflow
    client = mlflow.MlflowClient(server["uri"])
    exp = client.get_experiment_by_name("stemsift")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])
            if r.info.run_name in ("lr0.1", "lr0.2")}
    assert set(runs) == {"lr0.1", "lr0.2"}
    for r in runs.values():
        assert r.info.status == "FINISHED" and r.data.tags.get("dvc_exp_name")
        assert len(client.get_metric_history(r.info.run_id, "train_loss")) == 3
        assert [f.path for f in client.list_artifacts(r.info.run_id, "model")] == ["model/weights.txt"]
    a, b = runs.values()
    assert a.data.tags["dvc_exp_name"] != b.data.tags["dvc_exp_name"]
    assert a.info.start_time < b.info.end_time and b.info.start_time < a.info.end_time  # they overlapped
