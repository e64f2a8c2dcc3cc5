"""An MLflow tracking server on PostgreSQL with artifacts on the S3 API, all on 127.0.0.1: stemsift's tracking
helpers log complete runs there when MLFLOW_TRACKING_URI points at it, also from two processes at once."""
import json
import os
import subprocess
import sys
import textwrap
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
