"""End to end: `dvc repro` of the data stages in temporary copies of the repository (tiny params)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from stemsift.catalogue import EXAMPLE_QUERIES, query
from stemsift.params import TRAIN_SETS
from stemsift.tracking import read_run

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = {"workers": 2, "synthetic": {"duration": 3.0, "chorale_share": 0.5,
                                    "tracks": {"train": 8, "reference": 2, "test": 2}}}
# Smoke training (demucs' `make smoke` pattern): a few steps per target, one seed.
TINY_TRAIN = {"seeds": [0], "epochs": 2, "steps_per_epoch": 2, "batch_size": 2, "seq_dur": 1.0,
              "valid_segments": 1, "hidden_size": 32, "nb_layers": 1}


def _sh(cmd, cwd):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, shell=True)
    assert out.returncode == 0, f"{cmd}\n{out.stdout}\n{out.stderr}"
    return out.stdout


def make_copy(dst: Path) -> Path:
    """A fresh git+DVC repo with this repo's pipeline, code and params (tiny data)."""
    dst.mkdir()
    for name in ("dvc.yaml", "params.yaml", "src", ".gitignore"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, dst / name)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    params["data"].update({k: v for k, v in TINY.items() if k != "synthetic"})
    params["data"]["synthetic"].update(TINY["synthetic"])
    params["train"].update(TINY_TRAIN)
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _sh("git init -q && dvc init -q && dvc config core.analytics false && git add -A && git commit -qm init", dst)
    return dst


def out_hashes(repo: Path) -> dict:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for st in lock["stages"].values() for o in st.get("outs", [])}


@pytest.mark.slow
def test_dvc_repro_end_to_end_is_reproducible(tmp_path):
    a = make_copy(tmp_path / "a")
    _sh("dvc repro", a)
    db = a / "data" / "catalogue.duckdb"
    defects = query(db, EXAMPLE_QUERIES["songs and stems per defect"]).set_index("defect").songs.to_dict()
    assert defects == {"clean": 4, "label_noise": 2, "bleeding": 2}
    for q in EXAMPLE_QUERIES.values():
        query(db, q)
    assert "up to date" in _sh("dvc repro", a).lower() or "didn't change" in _sh("dvc status", a)
    metrics = _sh("dvc metrics show", a)
    assert "songs_label_noise" in metrics
    _sh("stemsift validate data/contaminated", a)
    separation = json.loads((a / "metrics" / "separation.json").read_text())
    assert set(TRAIN_SETS) <= set(separation) and "gain_db" in separation and "gap_closed" in separation
    assert all(np.isfinite(separation[n]["sdr_avg"]) for n in TRAIN_SETS)
    run_id = json.loads((a / "metrics" / "train" / "baseline-runs.json").read_text())["0"]["mlflow_run_id"]
    run = read_run(run_id, repo_root=a)
    assert run["status"] == "FINISHED" and "sdr_avg" in run["metrics"] and run["params"]["train.seeds"] == "[0]"
    assert len(run["history"]["train_loss"]) == 2 and any(p.endswith("vocals.pth") for p in run["artifacts"])
    assert query(db, "SELECT count(*) AS n FROM runs").n[0] == len(TRAIN_SETS)
    # no cleaner yet: the cleaned set selects the baseline's stems, so its training is reused, not recomputed
    assert json.loads((a / "metrics" / "train" / "cleaned-runs.json").read_text())["0"]["reused"] is True
    assert separation["cleaned"] == separation["baseline"] and separation["gain_db"] == 0

    b = make_copy(tmp_path / "b")  # an independent copy: same params -> same data hashes
    _sh("dvc repro prepare contaminate", b)
    ha, hb = out_hashes(a), out_hashes(b)
    assert ha["data/raw"] == hb["data/raw"] and ha["data/contaminated"] == hb["data/contaminated"]

    _sh("git add -A && git commit -qm data", a)
    _sh("dvc exp run -S contaminate.preset=effects", a)  # a sweep changes only what depends on it
    shown = _sh("dvc exp show --no-pager --csv", a)
    assert "songs_effects" in shown and "sdr_avg" in shown
    assert "songs_effects" in _sh("dvc metrics diff --all", a)
