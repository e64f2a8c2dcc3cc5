"""`make evidence`: the grid it plans and the statistics it reports (on generated per-song tables)."""
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from stemsift import LABELS, evidence
from stemsift.separate.paired import paired_ratio

from test_pipeline import REPO, _sh, assert_shared_stores_intact, make_copy


def per_song(level: float, seeds=(0, 1), songs=24, noise=0.3, seed=0) -> pd.DataFrame:
    """A per-track table as evaluate writes it: song effects shared by every set, a set level, a little noise."""
    rng = np.random.default_rng(seed)
    song = np.random.default_rng(99).normal(0, 2, songs)  # the same songs are hard for every set
    rows = [(f"test-{i:03d}", t, level + song[i] + rng.normal(0, noise), level + song[i], 20, s)
            for s in seeds for i in range(songs) for t in LABELS]
    return pd.DataFrame(rows, columns=["track_id", "target", "sdr", "sdr_utt", "frames", "seed"])


def test_plan_owns_fixed_sets_once_per_preset_and_names_carry_the_grid():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    _, sc, exps = evidence.plan(params, "gpu")
    assert len(exps) == len(sc.presets) * (1 + len(sc.cleaners) * len(sc.ratios))
    for preset in sc.presets:
        own = [e for e in exps if e.preset == preset]
        assert own[0].sets == sc.fixed and all(e.sets == ["cleaned"] for e in own[1:])  # each set evaluated once
    cmd = exps[1].command()
    assert cmd[:4] == ["dvc", "exp", "run", "--queue"] and "train.epochs=24" in cmd and "train.patience=24" in cmd
    assert f"data.synthetic.tracks.test={sc.test_songs}" in cmd and cmd[-1] == "evaluate@cleaned"
    assert exps[0].command()[-len(sc.fixed):] == [f"evaluate@{s}" for s in sc.fixed]
    other = json.loads(json.dumps(params))
    other["evidence"]["scales"]["gpu"]["seeds"] = [0]
    assert evidence.plan(other, "gpu")[2][0].name != exps[0].name  # another training setup never reuses them
    grown = json.loads(json.dumps(params))
    grown["evidence"]["scales"]["gpu"]["ratios"] = [0.6]
    assert evidence.plan(grown, "gpu")[2][0].name == exps[0].name  # a grown grid keeps the finished ones
    bad = json.loads(json.dumps(params))
    bad["evidence"]["scales"]["gpu"]["steps_per_target"] = 1201
    with pytest.raises(ValueError, match="multiple of steps_per_epoch"):
        evidence.plan(bad, "gpu")
    with pytest.raises(ValueError, match="evidence.scale 'huge'"):
        evidence.plan(params, "huge")


def test_summary_reads_a_clear_gain_and_calls_noise_noise():
    tables = {"baseline": per_song(2.0, seed=1), "oracle": per_song(4.0, seed=2),
              "blind@auto": per_song(3.0, seed=3), "random@0.75": per_song(2.0, seed=4)}
    filters = {"blind@auto": {"ratio": 0.5, "cleaned_songs": 50, "clean_share": 0.94, "clean_kept": 0.94},
               "random@0.75": {"ratio": 0.75, "cleaned_songs": 75, "clean_share": 0.5, "clean_kept": 0.75}}
    out = evidence.summarize({"mixed": {"tables": tables, "filters": filters, "clean_share": 0.5}}, resamples=500)
    rows = {r["set"]: r for r in out["mixed"]["sets"]}
    blind, rnd = rows["blind@auto"], rows["random@0.75"]
    assert blind["delta_ci95"][0] > 0.8 and abs(blind["delta_db"] - 1.0) < 0.1
    assert 0.4 < blind["gap_closed"] < 0.6 and blind["gap_closed_ci95"][0] < blind["gap_closed"] < blind["gap_closed_ci95"][1]
    assert rnd["delta_ci95"][0] < 0 < rnd["delta_ci95"][1]  # inside the noise: the interval holds zero
    assert rows["baseline"]["clean_share"] == 0.5 and rows["oracle"]["clean_share"] == 1.0
    assert rows["baseline"]["sdr_std"] is not None and rows["baseline"]["seeds"] == 2
    assert out["mixed"]["best_overall"] == out["mixed"]["best_blind"] == "blind@auto"
    md = evidence.markdown(out, "mixed")
    assert md.count("\n") == 1 + len(tables) and "| blind@auto |" in md


def test_gap_closed_interval_resamples_pairs_jointly():
    base, top = per_song(0.0, seed=5), per_song(2.0, seed=6)
    assert paired_ratio(per_song(2.0, seed=7), top, base)["ratio"] == pytest.approx(1.0, abs=0.05)
    assert paired_ratio(base, base, base) is None  # no gap: undefined, not infinite


@pytest.mark.slow
def test_tiny_grid_runs_as_queued_experiments_and_resumes(tmp_path):
    """`make evidence` for real on a fresh (unbuilt) tiny copy: each queued experiment runs the stages its sets need."""
    a = make_copy(tmp_path / "a", refine={"steps": 4, "batch_size": 4, "iterations": 1})  # refined labels: not tested here
    shared = f"MLFLOW_TRACKING_URI=sqlite:///{a}/mlflow.db STEMSIFT_CACHE={a}/.stemsift-cache"
    # its two experiments (fixed sets; blind at auto) run side by side (jobs: 2) on one MLflow store and one memo
    # cache, as `make sweep` shares them; then every set is read back from its experiment's commit
    log = _sh(f"{shared} stemsift evidence --scale tiny", a)
    assert "best blind: blind@auto" in log and "queued ev" in log
    # the cleaned set's experiment trains the baseline (its cleaners' scores need it) without evaluating it
    assert_shared_stores_intact(a, min_experiments=2, unevaluated=lambda exp, run: exp.endswith("-blind-auto")
                                and run.startswith("baseline-"))
    out = json.loads((a / "metrics/evidence.json").read_text())
    rows = {r["set"]: r for r in out["presets"]["mixed"]["sets"]}
    assert set(rows) == {"baseline", "oracle", "blind@auto"} and out["steps_per_target"] == 4
    assert rows["oracle"]["pairs"] == 2 * 2 and rows["blind@auto"]["kept_songs"] == 8  # 8 songs: too few to split
    assert (a / "metrics/evidence/mixed.csv").is_file()
    again = _sh(f"{shared} stemsift evidence --scale tiny", a)  # resumable: nothing is queued again
    assert "done   ev" in again and "queued ev" not in again
