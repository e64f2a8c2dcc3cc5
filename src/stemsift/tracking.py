"""MLflow tracking for separator training: one run per training, local sqlite store at the repository root."""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import warnings
from pathlib import Path
from urllib.parse import unquote

# Equals mlflow.utils.validation.MAX_PARAM_VAL_LENGTH in 3.x (a test checks); hard-coded so flatten() needs no mlflow.
MAX_PARAM_LEN = 6000
RUNS_DIR = Path("metrics/train")
# Env vars DVC sets for a stage command (dvc/env.py, dvc 3.x); DVC_EXP_* only under `dvc exp run`.
DVC_ENV_TAGS = {"DVC_EXP_NAME": "dvc_exp_name", "DVC_EXP_BASELINE_REV": "dvc_exp_baseline_rev",
                "DVC_STAGE": "dvc_stage"}


def _mlflow():
    """Import mlflow lazily (~1 s); telemetry off unless the user opted in (offline, it stalls interpreter exit)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow
    for name in ("mlflow.store.db.utils", "alembic", "mlflow.tracking.fluent", "mlflow.utils.git_utils"):
        logging.getLogger(name).setLevel(logging.WARNING)  # table-creation / migration chatter on a new mlflow.db
    for category in (FutureWarning, DeprecationWarning):  # mlflow's own / its sqlalchemy usage; not the caller's to fix
        warnings.filterwarnings("ignore", module=r"mlflow(\..*)?$", category=category)
    return mlflow


def tracking_uri(repo_root: str | Path = ".") -> str:
    """MLFLOW_TRACKING_URI if set, else sqlite:///<abs repo_root>/mlflow.db."""
    return os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///" + (Path(repo_root).resolve() / "mlflow.db").as_posix()


def _artifact_root(uri: str) -> str | None:
    """mlruns/ next to a local sqlite db (MLflow would use the cwd); None = let the store/server decide."""
    if not uri.startswith("sqlite:///") or ":memory:" in uri:
        return None
    return (Path(unquote(uri[len("sqlite:///"):].split("?")[0])).resolve().parent / "mlruns").as_uri()


def _client(uri: str):
    """MlflowClient for `uri`. A local sqlite store is first opened under an exclusive file lock: MLflow creates or
    migrates its tables on first use, and two processes doing that at once (queued experiments sharing one
    store) fail with "table ... already exists"."""
    mlflow = _mlflow()
    if uri.startswith("sqlite:///") and ":memory:" not in uri:
        import fcntl

        db = Path(unquote(uri[len("sqlite:///"):].split("?")[0]))
        db.parent.mkdir(parents=True, exist_ok=True)
        with open(db.with_name(db.name + ".init-lock"), "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                client = mlflow.MlflowClient(uri)
                client.search_experiments(max_results=1)  # forces the store's table creation / migration now
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return client
    return mlflow.MlflowClient(uri)


def flatten(d: dict, prefix: str = "", sep: str = ".") -> dict[str, str]:
    """Nested params -> {'train.model.hidden_size': '128', ...}; lists JSON-encoded, values capped at MAX_PARAM_LEN."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key, sep))
        else:
            s = json.dumps(v, default=str) if isinstance(v, (list, tuple, dict)) else str(v)
            out[key] = s[:MAX_PARAM_LEN]
    return out


def dvc_out_hash(path: str, lock_file: str | Path = "dvc.lock") -> str | None:
    """The md5 DVC recorded for output `path` in dvc.lock ('.dir' suffix for directories); None if absent."""
    import yaml
    lock_file = Path(lock_file)
    try:
        lock = yaml.safe_load(lock_file.read_text()) or {}
    except FileNotFoundError:
        return None
    p = Path(path)
    if p.is_absolute():  # lock paths are relative to the lock's directory
        p = Path(os.path.relpath(p, lock_file.resolve().parent))
    want = os.path.normpath(p)
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            if os.path.normpath(out.get("path", "")) == want:
                return out.get("md5") or out.get(out.get("hash", "md5"))
    return None


def git_commit(repo_root: str | Path = ".") -> str | None:
    """HEAD commit hash (+ '-dirty' if tracked files have uncommitted changes), None outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo_root), *args], capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty else "")


def _device() -> str:
    """GPU name if torch sees one, else 'cpu' (training imports torch anyway)."""
    try:
        import torch
        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001 - a tag is not worth failing a training for
        return "unknown"


class TrainingRun:
    """Context manager wrapping one MLflow run (FAILED on exception, KILLED on Ctrl-C)."""

    def __init__(self, run_name: str, experiment: str = "stemsift", params: dict | None = None,
                 tags: dict | None = None, repo_root: str | Path = "."):
        self.run_name, self.experiment, self.params = run_name, experiment, params or {}
        self.tags, self.repo_root = dict(tags or {}), Path(repo_root)
        self.uri = tracking_uri(repo_root)
        self.run_id: str | None = None

    def _experiment_id(self) -> str:
        """Existing experiment, or a new one whose artifacts live in mlruns/<id> beside the sqlite db."""
        from mlflow.exceptions import MlflowException
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            return exp.experiment_id
        root = _artifact_root(self.uri)
        try:
            if root is None:
                return self.client.create_experiment(self.experiment)
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
            store = SqlAlchemyStore(self.uri, root)  # the only API that takes a default root -> mlruns/<exp id>
            try:
                return store.create_experiment(self.experiment)
            finally:
                store.engine.dispose()
        except MlflowException:  # another process created it first
            return self.client.get_experiment_by_name(self.experiment).experiment_id

    def __enter__(self) -> "TrainingRun":
        self.mlflow = mlflow = _mlflow()
        mlflow.set_tracking_uri(self.uri)
        self.client = _client(self.uri)
        exp_id = self._experiment_id()
        mlflow.set_experiment(experiment_id=exp_id)
        commit = git_commit(self.repo_root)
        tags = {"git_commit": commit or "none", "host": socket.gethostname(), "device": _device()}
        if commit:
            tags["mlflow.source.git.commit"] = commit.removesuffix("-dirty")
        tags.update({t: os.environ[e] for e, t in DVC_ENV_TAGS.items() if os.environ.get(e)})
        tags.update({k: str(v) for k, v in self.tags.items()})
        run = mlflow.start_run(experiment_id=exp_id, run_name=self.run_name, tags=tags,
                               nested=mlflow.active_run() is not None)
        self.run_id = run.info.run_id
        try:
            if self.params:
                mlflow.log_params(flatten(self.params), run_id=self.run_id)
        except BaseException as e:  # __exit__ won't run if __enter__ raises: don't leave a RUNNING run behind
            self.__exit__(type(e), e, None)
            raise
        return self

    def log_epoch(self, epoch: int, **metrics: float | None) -> None:
        """Per-epoch values (train_loss, valid_loss, lr, ...) with step = epoch; None values skipped."""
        self.log_metrics({k: v for k, v in metrics.items() if v is not None}, step=epoch)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step, run_id=self.run_id)

    def log_model_dir(self, path: str | Path, artifact_path: str = "model") -> None:
        """Every file of the model folder (state dicts + json) under `artifact_path/`."""
        self.mlflow.log_artifacts(str(path), artifact_path=artifact_path, run_id=self.run_id)

    def __exit__(self, exc_type, exc, tb) -> bool:
        status = "FINISHED" if exc_type is None else "KILLED" if exc_type is KeyboardInterrupt else "FAILED"
        active = self.mlflow.active_run()
        if active is not None and active.info.run_id == self.run_id:
            self.mlflow.end_run(status)
        else:  # the caller left a nested run open; close ours without touching theirs
            self.client.set_terminated(self.run_id, status)
        return False


def read_run(run_id: str, repo_root: str | Path = ".") -> dict:
    """Params, latest metrics, tags, per-metric (step, value) history and artifact paths of one run."""
    client = _client(tracking_uri(repo_root))
    run = client.get_run(run_id)
    history = {k: [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, k),
                                                     key=lambda m: (m.step, m.timestamp))]
               for k in run.data.metrics}
    artifacts, todo = [], [None]
    while todo:  # list_artifacts is one level deep
        for f in client.list_artifacts(run_id, todo.pop()):
            (todo if f.is_dir else artifacts).append(f.path)
    return {"params": dict(run.data.params), "metrics": dict(run.data.metrics), "tags": dict(run.data.tags),
            "history": history, "artifacts": sorted(artifacts), "status": run.info.status}


def log_final_metrics(run_id: str, metrics: dict[str, float], repo_root: str | Path = ".") -> None:
    """Add metrics to a finished run (evaluation happens in a later stage than training)."""
    import math

    client = _client(tracking_uri(repo_root))
    for k, v in metrics.items():
        if isinstance(v, (int, float)) and math.isfinite(v):
            client.log_metric(run_id, k, float(v))


def runs_file(set_name: str) -> Path:
    """Run ids per seed: not a DVC metric (strings); written by the train stage, read by the evaluate stage."""
    return RUNS_DIR / f"{set_name}-runs.json"
