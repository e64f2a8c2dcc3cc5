"""Survive kill -9: a stage killed at any point leaves every earlier output byte for byte as it was (or, killed
after its final rename, the complete new one), and its rerun gives exactly the output of an uninterrupted run."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from stemsift.stemset import atomic_dir

SRC = Path(__file__).resolve().parents[1] / "src"
TINY = {"data": {"sample_rate": 8000, "workers": 1,
                 "synthetic": {"duration": 2.0, "chorale_share": 0.0, "tracks": {"train": 4, "reference": 1, "test": 1}}},
        "score": {"cleaner": "none"}}
# stage -> the outputs it writes (cost metrics hold wall time: not compared)
STAGES = {"prepare": ["data/raw"], "contaminate": ["data/contaminated", "metrics/contamination.json"],
          "select": ["data/selections"], "filter": ["data/filtered", "metrics/filter.json"]}


def hashes(root: Path, outs: list[str]) -> dict[str, str]:
    found = {}
    for out in outs:
        p = root / out
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p] if p.is_file() else []
        found.update({f.relative_to(root).as_posix(): hashlib.sha1(f.read_bytes()).hexdigest() for f in files})
    return found


def write_params(root: Path, seed: int) -> None:
    params = {**TINY, "data": {**TINY["data"], "seed": seed}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def start(root: Path, stage: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "stemsift.cli", stage], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(root: Path, stage: str) -> None:
    p = start(root, stage)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, f"{stage}: {err}"


def writing(root: Path, stage: str) -> bool:
    """The stage's temp output exists: it is in the middle of writing."""
    return any(root.joinpath(o).parent.glob(f".{Path(o).name}.tmp-*") for o in STAGES[stage])


def kill_at(root: Path, stage: str, point: str) -> bool:
    """Run `stage` and SIGKILL it at `point` (early: while importing; writing: once its temp output appears).
    True when the kill interrupted it (False: it had already finished)."""
    p = start(root, stage)
    t0 = time.monotonic()
    while p.poll() is None and time.monotonic() - t0 < 60:
        if point == "early" and time.monotonic() - t0 > 0.3 or point == "writing" and writing(root, stage):
            break
        time.sleep(0.002)
    if p.poll() is None:
        p.send_signal(signal.SIGKILL)
    p.communicate(timeout=60)
    return p.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_kill_9_at_any_point_keeps_earlier_outputs_and_the_rerun_equals_an_uninterrupted_run(tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    ref.mkdir(), run.mkdir()
    write_params(ref, seed=0)
    for stage in STAGES:
        finish(ref, stage)
    want = {s: hashes(ref, outs) for s, outs in STAGES.items()}
    write_params(run, seed=1)  # earlier outputs that differ from the reference run's
    for stage in STAGES:
        finish(run, stage)
    write_params(run, seed=0)
    interrupted = 0
    for stage, outs in STAGES.items():
        old = hashes(run, outs)
        assert old != want[stage] or stage in ("select", "filter")  # selections do not depend on the audio
        for point in ("early", "writing"):
            interrupted += kill_at(run, stage, point)
            now = hashes(run, outs)
            for out in outs:  # each output: the earlier one intact, or (killed after its rename) the new one
                mine = {k: v for k, v in now.items() if k.startswith(out)}
                assert mine in ({k: v for k, v in old.items() if k.startswith(out)},
                                {k: v for k, v in want[stage].items() if k.startswith(out)}), (stage, point, out)
        finish(run, stage)
        assert hashes(run, outs) == want[stage], stage
        leftovers = [p.name for o in outs for p in run.joinpath(o).parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
        assert leftovers == [], (stage, leftovers)  # the rerun cleared what the killed runs left
    assert interrupted >= len(STAGES), "too few kills landed before the stage finished"


def test_a_killed_runs_temp_folder_is_cleared_and_a_moved_aside_output_restored(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "a").write_text("first")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a pid that has exited: what a killed run leaves behind carries such a pid
    (tmp_path / f".out.tmp-{pid}").mkdir()
    with atomic_dir(out) as tmp:
        (tmp / "a").write_text("second")
    assert (out / "a").read_text() == "second" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # killed between moving the old output aside and renaming the new one in: the old output comes back
    os.replace(out, tmp_path / f".out.old-{pid}")
    try:
        with atomic_dir(out) as tmp:
            assert (out / "a").read_text() == "second"  # restored before anything else happens
            raise RuntimeError("this run fails")
    except RuntimeError:
        pass
    assert (out / "a").read_text() == "second" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def tiny_stemset(root: Path, seed: int) -> None:
    import numpy as np

    from stemsift import LABELS
    from stemsift.stemset import StemSetWriter

    rng = np.random.default_rng(seed)
    w = StemSetWriter(root, 8000, 1)
    w.add_track("t0", "train", {lb: (0.1 * rng.standard_normal((800, 1))).astype(np.float32) for lb in LABELS})
    w.close()


def test_opening_a_stem_set_clears_dead_runs_temp_folders_and_keeps_a_live_writers(tmp_path):
    from stemsift.stemset import StemSet

    tiny_stemset(tmp_path / "out", 0)
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for pid in (dead, live.pid):
            (tmp_path / f".out.tmp-{pid}").mkdir()
            (tmp_path / f".out.tmp-{pid}" / "half-written.flac").write_bytes(b"x" * 100)
        (tmp_path / f".out.old-{dead}").mkdir()  # killed after its new output was in, before removing the old one
        StemSet(tmp_path / "out")
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", f".out.tmp-{live.pid}"])
    finally:
        live.kill()
        live.wait()


STAGE = '''import os, sys, time
import yaml
from stemsift.stemset import atomic_dir
sys.path.insert(0, os.environ["TESTS"])
from test_kill import tiny_stemset
seed = yaml.safe_load(open("params.yaml"))["seed"]
with atomic_dir("out") as tmp:
    tiny_stemset(tmp, seed)
    if os.environ.get("HANG"):
        time.sleep(60)
'''


@pytest.mark.slow
def test_a_run_cache_restore_leaves_the_killed_runs_temp_folder_and_opening_the_set_or_gc_clears_it(tmp_path):
    """As an outside user: kill -9 a stage under `dvc repro`, `dvc repro` again: DVC's run-cache restores the
    output without running the stage, so the killed run's temp folder stays; `stemsift gc` (or the next stage
    opening the stem set) removes it."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "TESTS": str(Path(__file__).parent), "OMP_NUM_THREADS": "1"}
    dvc = [str(Path(sys.executable).with_name("dvc"))]

    def repro(**extra) -> subprocess.CompletedProcess:
        return subprocess.run(dvc + ["repro", "-q"], cwd=tmp_path, env={**env, **extra}, capture_output=True, text=True)

    subprocess.run(dvc + ["init", "--no-scm", "-q"], cwd=tmp_path, env=env, check=True)
    (tmp_path / "stage.py").write_text(STAGE)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"make": {
        "cmd": f"{sys.executable} stage.py", "deps": ["stage.py"], "params": ["seed"], "outs": ["out"]}}}))
    for seed in (1, 0):  # seed 1 enters the run-cache; seed 0 is the output in place
        (tmp_path / "params.yaml").write_text(f"seed: {seed}\n")
        assert repro().returncode == 0, seed
    manifest = (tmp_path / "out" / "manifest.parquet").read_bytes()
    (tmp_path / "params.yaml").write_text("seed: 2\n")  # a new value, tried and killed; then back to one run before
    p = subprocess.Popen(dvc + ["repro", "-q"], cwd=tmp_path, env={**env, "HANG": "1"}, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    while not (tmps := list(tmp_path.glob(".out.tmp-*/manifest.parquet"))) and time.monotonic() - t0 < 30:
        time.sleep(0.05)
    assert tmps, "the stage never started writing"
    os.kill(int(tmps[0].parent.name.rpartition("-")[2]), signal.SIGKILL)  # the stage, mid-write
    p.wait(timeout=60)
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    r = repro()
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "manifest.parquet").read_bytes() != manifest  # seed 1's output is back
    left = sorted(q.name for q in tmp_path.glob(".out.*"))
    assert len(left) == 1, left  # restored from the run-cache: nothing ran that would have cleared it
    out = subprocess.run([sys.executable, "-m", "stemsift.cli", "gc", "."], cwd=tmp_path, env=env, capture_output=True,
                         text=True)
    assert out.returncode == 0 and "1 leftover" in out.stdout, out
    assert not list(tmp_path.glob(".out.*")) and (tmp_path / "out" / "manifest.parquet").is_file()
