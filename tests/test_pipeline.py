"""End to end: `dvc repro` of the data stages in temporary copies of the repository (tiny params)."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

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


# Ψ for the refine stage: enough random-mix steps that every class gets stems refined to exactly itself.
TINY_REFINE = {"steps": 60, "batch_size": 8, "iterations": 1, "clean_oracle": True}


def _sh(cmd, cwd):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, shell=True)
    print(f"[{time.perf_counter() - t0:6.1f} s] {cmd}")  # where an end-to-end test's time goes (pytest -s / --durations)
    assert out.returncode == 0, f"{cmd}\n{out.stdout}\n{out.stderr}"
    return out.stdout


def make_copy(dst: Path, refine: dict = TINY_REFINE) -> Path:
    """A fresh git+DVC repo with this repo's pipeline, code and params (tiny data)."""
    dst.mkdir()
    for name in ("dvc.yaml", "params.yaml", "src", ".gitignore", "verdicts"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, dst / name)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    params["data"].update({k: v for k, v in TINY.items() if k != "synthetic"})
    params["data"]["synthetic"].update(TINY["synthetic"])
    params["train"].update(TINY_TRAIN)
    params["refine"].update(refine)
    params["evaluate"]["workers"] = 1  # 2 test songs: a museval pool costs more than it saves (test_evaluate has it)
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _sh("git init -q && dvc init -q && dvc config core.analytics false && git add -A && git commit -qm init", dst)
    return dst


def out_hashes(repo: Path) -> dict:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for st in lock["stages"].values() for o in st.get("outs", [])}


def assert_shared_stores_intact(repo: Path, min_experiments: int, unevaluated=lambda exp, run: False) -> None:
    """After experiments ran side by side: every MLflow run in the shared store finished, with its SDR logged unless
    `unevaluated(experiment, run name)` (a set trained but not evaluated there), each experiment has its runs, and the
    memo cache holds only complete entries (no temp folder, every file readable)."""
    from stemsift.tracking import _mlflow

    mlflow = _mlflow()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)
    bad = [(r.data.tags.get("dvc_exp_name"), r.info.run_name, r.info.status, sorted(r.data.metrics)) for r in runs
           if r.info.status != "FINISHED" or ("sdr_avg" not in r.data.metrics
                                              and not unevaluated(r.data.tags.get("dvc_exp_name"), r.info.run_name))]
    assert runs and not bad, bad
    assert len({r.data.tags.get("dvc_exp_name") for r in runs} - {None}) >= min_experiments
    cache = repo / ".stemsift-cache"
    assert not [p for p in cache.rglob("*") if ".tmp-" in p.name]
    for entry in (cache / "train").iterdir():
        json.loads((entry / "separator.json").read_text())
    for entry in (cache / "evaluate").iterdir():
        assert len(pd.read_parquet(entry / "per_track.parquet")) > 0


@pytest.mark.slow
def test_dvc_repro_end_to_end_is_reproducible(tmp_path):
    a = make_copy(tmp_path / "a")
    _sh("dvc repro", a)
    db = a / "data" / "catalogue.duckdb"
    defects = query(db, EXAMPLE_QUERIES["songs and stems per defect"]).set_index("defect").songs.to_dict()
    assert defects == {"clean": 4, "label_noise": 2, "bleeding": 2}
    for q in EXAMPLE_QUERIES.values():
        query(db, q)
    again = _sh("dvc repro", a)  # nothing changed: no stage may run again
    assert "Running stage" not in again and "up to date" in again.lower(), again
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
    # cleaners: every one scored every training stem
    cleaning = json.loads((a / "metrics" / "cleaning.json").read_text())
    assert set(cleaning) == {"random", "level", "fad", "leak", "degrade", "loss", "unlearning", "blind", "mlp", "confident",
                             "selfrefine", "hybrid"}
    assert cleaning["unlearning"]["cost"]["ratio_to_training"] > 0  # attribution time vs one baseline training
    truth = pd.read_parquet(a / "data" / "contaminated" / "truth.parquet")
    bad = set(truth[truth.defect != "clean"].track_id)
    for c in cleaning:  # the reported song AUC is the AUC of -song_score for "song is defective", recomputed here
        songs = pd.read_parquet(a / "data" / "scores" / f"scores-{c}.parquet").groupby("track_id").song_score.first()
        expect = roc_auc_score([t in bad for t in songs.index], -songs.to_numpy())
        assert cleaning[c]["song_auc"]["all"] == round(float(expect), 4), c
    n_cleaners = len(cleaning)
    assert query(db, "SELECT count(DISTINCT cleaner) AS c, count(*) AS n FROM scores").values.tolist() == [[n_cleaners, n_cleaners * 8 * 4]]
    # self-refining: Ψ_0 and Ψ_1 probabilities for every stem, the classifier table, the refined training set
    assert query(db, "SELECT count(*) AS n FROM refined_labels").n[0] == 2 * 8 * 4
    assert query(db, "SELECT count(*) AS n FROM labels WHERE kind = 'refined'").n[0] == 2 * 8 * 4
    assert query(db, "SELECT count(*) AS n FROM selections WHERE train_set = 'refined'").n[0] == 8 * 4 * 4
    classifier = json.loads((a / "metrics" / "classifier.json").read_text())
    assert {"noisy", "iter1", "clean", "refinement"} <= set(classifier)
    assert classifier["noisy"]["all"]["n"] == 2 * 15
    for name in ("noisy", "iter1", "clean"):  # a share of the 30 test examples, in percent
        assert round(classifier[name]["all"]["exact_match"] * 30 / 100, 2) % 1 == 0, classifier[name]["all"]
    # refined labels vs the truth, recomputed from the stage's own table
    table = pd.read_parquet(a / "data" / "refined" / "refined_labels.parquet")
    true = {(t, lb): frozenset(v) for t, lb, v in zip(truth.track_id, truth.label, truth.true_instruments)}
    for k, name in ((0, "noisy"), (1, "iter1")):
        it = table[table.iteration == k]
        same = [frozenset(r) == true[(t, lb)] for t, lb, r in zip(it.track_id, it.label, it.refined) if (t, lb) in true]
        assert classifier["refinement"][name]["exact_after"] == round(100 * sum(same) / len(same), 2)
    assert "gain_refined_db" in separation
    # the full unlearning matrix: 8 training songs x 2 reference songs x 4 targets
    assert query(db, "SELECT count(*) AS n FROM attribution").n[0] == 8 * 2 * 4
    filt = json.loads((a / "metrics" / "filter.json").read_text())
    # the default blind cleaner at filter.ratio=auto: 8 songs are too few for a mixture -> warned, all kept
    assert filt["cleaned_songs"] == 8 and filt["baseline_songs"] == 8 and filt["cleaner"] == "blind"
    assert filt["auto_method"] == "storey" and filt["ratio"] == 1.0 and "too few" in filt["auto_warning"]
    _sh("stemsift validate data/filtered", a)
    assert len(list((a / "data" / "filtered" / "train").iterdir())) == 8

    b = make_copy(tmp_path / "b")  # an independent copy: same params -> same data hashes
    _sh("dvc repro prepare contaminate", b)
    ha, hb = out_hashes(a), out_hashes(b)
    assert ha["data/raw"] == hb["data/raw"] and ha["data/contaminated"] == hb["data/contaminated"]

    _sh("git add -A && git commit -qm data", a)
    # a ratio / cleaner sweep re-uses the embeddings and scores: only filter, train@cleaned, ... run again
    log = _sh("dvc exp run -S score.cleaner=mlp -S filter.ratio=0.5", a)
    assert "Stage 'embed' didn't change" in log and "Stage 'score' didn't change" in log
    assert "Running stage 'train@cleaned'" in log and "Running stage 'train@baseline'" not in log
    shown = _sh("dvc exp show --no-pager --csv", a)
    assert "song_auc" in shown and "gain_db" in shown
    sweep = _sh("stemsift sweep", a)
    table = pd.read_csv(a / "metrics" / "sweep.csv")
    assert {("mlp", 0.5)} == set(zip(table.cleaner, table.ratio)), sweep
    assert (a / "metrics" / "sweep" / "mlp.csv").is_file()
    assert "cleaned_songs" in _sh("dvc metrics diff --all", a)  # workspace (mlp, r=0.5) vs HEAD (blind, auto)

    # another project pulls the filtered stem set of a tagged version through a local DVC remote
    _sh(f"dvc remote add -d store {tmp_path / 'remote'} && dvc push -q && git add -A && git commit -qm remote "
        "&& git tag v1", a)
    c = tmp_path / "c"
    c.mkdir()
    _sh(f"git init -q && dvc init -q && dvc import {a} data/filtered -o filtered --rev v1 && "
        f"dvc get {a} data/filtered -o got --rev v1", c)
    for folder in ("filtered", "got"):  # v1 holds the last `dvc exp run` applied to the workspace: mlp at r=0.5
        _sh(f"stemsift validate {folder}", c)
        assert len(list((c / folder / "train").iterdir())) == 4
    assert (c / "filtered.dvc").is_file()

    # refined labels for the cleaned set: only train@cleaned trains again (the controls reuse their models)
    log = _sh("dvc exp run -S train.labels=refined", a)
    assert "Stage 'refine' didn't change" in log and "Running stage 'train@cleaned'" in log
    # train.labels is a param of train@cleaned alone: the controls do not even re-run (nor their evaluations)
    assert "Stage 'train@baseline' didn't change" in log and "Running stage 'evaluate@oracle'" not in log
    assert json.loads((a / "metrics" / "train" / "cleaned-runs.json").read_text())["0"]["labels"] == "refined"
    # MixIT from mixtures alone, with every regulariser and the exhaustive assignment
    log = _sh("dvc exp run -S train.labels=given -S train.method=mixit -S train.mixit.assignment=exhaustive "
              "-S train.mixit.sparsity=0.1 -S train.mixit.covariance=0.1 -S train.mixit.semantic=0.1", a)
    assert "Stage 'train@oracle' didn't change" in log and "Running stage 'train@cleaned'" in log
    cleaned = json.loads((a / "metrics" / "separation.json").read_text())["cleaned"]
    assert cleaned["method"] == "mixit" and np.isfinite(cleaned["si_snri"]) and np.isfinite(cleaned["sdr_oraclemap_avg"])
    meta = json.loads((a / "models" / "cleaned" / "seed0" / "separator.json").read_text())
    assert meta["method"] == "mixit" and {"sparsity", "covariance", "semantic"} <= set(meta["history"][0])
    assert "si_snri" in _sh("dvc exp show --no-pager --csv", a)
