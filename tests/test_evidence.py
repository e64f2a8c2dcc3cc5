"""`make evidence`: the grid it plans and the statistics it reports (on generated per-song tables)."""
import copy
import json
import shutil
from pathlib import Path

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
    blind, rnd, base, oracle = rows["blind@auto"], rows["random@0.75"], rows["baseline"], rows["oracle"]
    # Δ and gap closed are on the SDR column's statistic: the table's own numbers, not a second average
    assert blind["delta_db"] == pytest.approx(blind["sdr"] - base["sdr"], abs=0.002)
    assert blind["gap_closed"] == pytest.approx((blind["sdr"] - base["sdr"]) / (oracle["sdr"] - base["sdr"]), abs=0.01)
    lo, hi = blind["delta_ci95"]
    assert 0.5 < lo < 1.0 < hi < 1.5 and blind["pairs"] == 48 and blind["unpaired"] == 0  # holds the truth, not 0
    lo, hi = blind["gap_closed_ci95"]
    assert 0.3 < lo < 0.5 < hi < 0.7 and blind["gap_flag"] is None
    assert rnd["delta_ci95"][0] < 0 < rnd["delta_ci95"][1]  # inside the noise: the interval holds zero
    assert base["sdr_std"] is not None and base["seeds"] == 2
    assert out["mixed"]["best_overall"] == out["mixed"]["best_blind"] == "blind@auto"
    assert "test split" in out["mixed"]["best_chosen_on"]  # the README says where "best" was chosen
    md = evidence.markdown(out, "mixed")
    assert md.count("\n") == 1 + len(tables) and "| blind@auto |" in md


def test_a_set_with_nothing_to_pair_is_one_line_not_a_crash(capsys):
    tables = {"baseline": per_song(2.0, seed=1), "blind@auto": per_song(3.0, seeds=(5, 6), seed=3)}
    out = evidence.summarize({"mixed": {"tables": tables, "filters": {}, "clean_share": 0.5}}, resamples=100)
    row = {r["set"]: r for r in out["mixed"]["sets"]}["blind@auto"]
    assert row["delta_db"] is None and row["pairs"] == 0 and "no (seed, song)" in row["missing"]
    assert capsys.readouterr().out.count("\n") == 1 and out["mixed"]["best_blind"] is None
    assert f"| blind@auto | {row['sdr']:.2f} ± {row['sdr_std']:.2f} | {row['sdr_utt']:.2f} | — | — | — |" in evidence.markdown(out, "mixed")


def test_clean_shares_come_from_each_experiments_files():
    """The baseline's clean share is read from its experiment's contamination.json, a cleaned set's from its
    filter.json (the oracle's is 1 by construction: it trains on the truth)."""
    exps = [evidence.Experiment("ev0-mixed-baseline-oracle", "mixed", None, None, ["baseline", "oracle"], []),
            evidence.Experiment("ev0-mixed-blind-auto", "mixed", "blind", "auto", ["cleaned"], [])]
    files = {"metrics/contamination.json": json.dumps({"songs": 40, "songs_clean": 30}),
             "metrics/filter.json": json.dumps({"ratio": 0.6, "cleaned_songs": 24, "clean_share": 0.9, "clean_kept": 0.72}),
             **{f"metrics/eval/{s}.csv": per_song(2.0 + i, seed=i).to_csv(index=False)
                for i, s in enumerate(("baseline", "oracle", "cleaned"))}}
    by_preset = evidence.collect(exps, {e.name: "rev" for e in exps}, read=lambda rev, path: files[path])
    rows = {r["set"]: r for r in evidence.summarize(by_preset, resamples=100)["mixed"]["sets"]}
    assert rows["baseline"]["clean_share"] == 0.75 and rows["blind@auto"]["clean_share"] == 0.9
    assert rows["blind@auto"]["kept_songs"] == 24 and rows["blind@auto"]["clean_kept"] == 0.72


def test_gap_closed_resamples_the_three_sets_jointly_and_needs_an_oracle_gap():
    base, top = per_song(0.0, seed=5), per_song(2.0, seed=6)
    half = base.assign(sdr=base.sdr + 0.5 * (top.sdr - base.sdr))  # closes half the gap on every song and seed
    g = paired_ratio(half, top, base, stat="mean")
    # resampled jointly, the same songs and seeds enter numerator and denominator: the ratio never moves
    assert g["ratio"] == 0.5 and g["ci95"][1] - g["ci95"][0] < 0.01
    none = paired_ratio(per_song(1.0, seed=7), base, base)
    assert none["ratio"] is None and "≤ 0" in none["flag"]  # no gap: undefined, not infinite
    lucky = base.assign(sdr=base.sdr + np.where(base.seed == 0, 0.35, -0.25))  # +0.05 dB: one seed up, one down
    tiny = paired_ratio(base.assign(sdr=base.sdr + 0.02), lucky, base)  # a gap inside the seeds' noise
    assert tiny["ci95"] is None and "unbounded" in tiny["flag"]


def repo_copy(dst: Path) -> Path:
    """A git + DVC repo holding this checkout's pipeline, params and code (no data): what plan() and finished() read."""
    dst.mkdir()
    for name in ("dvc.yaml", "params.yaml", "src", "verdicts"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, dst / name)
    (dst / ".dvc").mkdir()
    (dst / ".dvc" / "config").write_text("")
    _sh("git init -q && git add -A && git commit -qm init", dst)
    return dst


def names(params: dict, root: Path) -> list[str]:
    return [e.name for e in evidence.plan(params, "tiny", root)[2]]


def test_names_change_with_cleaner_params_stage_code_and_the_contamination_seed(tmp_path):
    repo = repo_copy(tmp_path / "r")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    fixed, blind = names(params, repo)
    assert names(params, repo) == [fixed, blind]  # deterministic
    k = copy.deepcopy(params)
    k["cleaners"]["fad"]["k"] += 1  # the score stage depends on every cleaner's block; the fixed sets run no score
    assert names(k, repo) == [fixed, names(k, repo)[1]] and names(k, repo)[1] != blind
    seed = copy.deepcopy(params)
    seed["contaminate"]["seed"] += 1
    assert not {fixed, blind} & set(names(seed, repo))
    stage = repo / "src/stemsift/stages/contaminate.py"
    stage.write_text(stage.read_text() + "\nEDITED = 1\n")  # one source line of a stage every set depends on
    assert not {fixed, blind} & set(names(params, repo))


def test_finished_counts_only_an_experiment_whose_commit_ran_the_planned_code(tmp_path):
    repo = repo_copy(tmp_path / "r")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    exps = evidence.plan(params, "tiny", repo)[2]

    def experiment_commit(e) -> str:  # as DVC leaves it: the base's tree with the overrides in params.yaml
        (repo / "params.yaml").write_text(yaml.safe_dump(evidence.apply_overrides(params, e.overrides), sort_keys=False))
        _sh(f"git commit -qam {e.name}", repo)
        sha = _sh("git rev-parse HEAD", repo).strip()
        _sh(f"git update-ref refs/exps/ab/{'c' * 38}/{e.name} {sha} && git reset -q --hard HEAD~1", repo)
        return sha

    sha = experiment_commit(exps[0])
    done, stale = evidence.finished(exps, repo)
    assert done == {exps[0].name: sha} and not stale
    stage = repo / "src/stemsift/stages/evaluate.py"  # the code changes after that experiment ran
    stage.write_text(stage.read_text() + "\nEDITED = 1\n")
    again = evidence.plan(params, "tiny", repo)[2]
    assert not evidence.finished(again, repo)[0]  # new names: nothing to reuse
    # a ref with the new name whose commit still has the old code (a queue snapshot that missed the edit)
    _sh(f"git update-ref refs/exps/ab/{'d' * 38}/{again[0].name} {sha}", repo)
    done, stale = evidence.finished(again, repo)
    assert not done and stale == {again[0].name: [sha]}


@pytest.mark.slow
def test_tiny_grid_runs_as_queued_experiments_and_resumes(tmp_path):
    """`make evidence` for real on a fresh (unbuilt) tiny copy: each queued experiment runs the stages its sets need."""
    a = make_copy(tmp_path / "a", refine={"steps": 4, "batch_size": 4, "iterations": 1})  # refined labels: not tested here
    shared = f"MLFLOW_TRACKING_URI=sqlite:///{a}/mlflow.db STEMSIFT_CACHE={a}/.stemsift-cache"
    # its two experiments (fixed sets; blind at auto) run side by side (jobs: 2) on one MLflow store and one memo
    # cache, as `make sweep` shares them; then every set is read back from its experiment's commit
    log = _sh(f"{shared} stemsift evidence --scale tiny", a)
    assert "best blind: blind@auto" in log and "queued ev" in log
    # the cleaned set's experiment trains the baseline (its cleaners' scores need it) without evaluating it, and so
    # does the workspace's `dvc repro filter` before queueing (no experiment name: it is no experiment)
    assert_shared_stores_intact(a, min_experiments=2, unevaluated=lambda exp, run: (exp is None or exp.endswith(
                                "-blind-auto")) and run.startswith("baseline-"))
    out = json.loads((a / "metrics/evidence.json").read_text())
    rows = {r["set"]: r for r in out["presets"]["mixed"]["sets"]}
    assert set(rows) == {"baseline", "oracle", "blind@auto"} and out["steps_per_target"] == 4
    assert rows["oracle"]["pairs"] == 2 * 2 and rows["blind@auto"]["kept_songs"] == 8  # 8 songs: too few to split
    assert (a / "metrics/evidence/mixed.csv").is_file()
    again = _sh(f"{shared} stemsift evidence --scale tiny", a)  # resumable: nothing is queued again
    assert "done   ev" in again and "queued ev" not in again
