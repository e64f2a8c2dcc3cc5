"""stemsift.compute: the local executor, and the `embed` stage through a real two-node Ray cluster on 127.0.0.1
giving byte-identical embeddings to the local run."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import band_noise
from services import RAY_ENV, ray_cluster
from stemsift import LABELS
from stemsift.compute import ComputeError, Executor, shutdown
from stemsift.params import ComputeParams, ParamsError, stage_params
from stemsift.stemset import StemSetWriter

BIN = Path(sys.executable).parent
SRC = Path(__file__).resolve().parents[1] / "src"


def test_local_executor_keeps_order_and_is_lazy():
    seen = []

    def items():
        for i in range(5):
            seen.append(i)
            yield i

    it = Executor().imap(lambda x: x * x, items())
    assert seen == []  # nothing read before the first result is asked for
    assert next(it) == 0 and seen == [0]
    assert list(it) == [1, 4, 9, 16]
    assert Executor("local").map(str, [3, 1, 2]) == ["3", "1", "2"]


def test_compute_params_are_checked():
    p = stage_params({"compute": {"executor": "ray", "address": "127.0.0.1:6379"}}, "compute", ComputeParams)
    assert (p.executor, p.address, p.cpus_per_task) == ("ray", "127.0.0.1:6379", 1.0)
    assert stage_params({}, "compute", ComputeParams).executor == "local"
    with pytest.raises(ParamsError, match=r"params.yaml: compute.executor: unknown executor 'dask' \(use local, ray\)"):
        stage_params({"compute": {"executor": "dask"}}, "compute", ComputeParams)
    assert stage_params({"compute": {"workers": 2}}, "compute", ComputeParams).workers == 2
    for bad, why in ((0, "must be an integer >= 1"), (-2, "must be an integer >= 1"), (1.5, "expected int")):
        with pytest.raises(ParamsError, match=rf"params.yaml: compute.workers: {why}"):
            stage_params({"compute": {"workers": bad}}, "compute", ComputeParams)
    with pytest.raises(ComputeError, match="compute.workers: expected a number of processes >= 1, got 0"):
        Executor(workers=0)
    with pytest.raises(ParamsError, match=r"compute.gpus_per_task: must be >= 0"):
        stage_params({"compute": {"gpus_per_task": -1}}, "compute", ComputeParams)
    with pytest.raises(ComputeError, match="unknown executor 'spark'"):
        Executor("spark")


def pid_threads_square(x):
    """A pool task: which process ran it, with how many threads, and the answer."""
    import torch
    from threadpoolctl import threadpool_info

    time.sleep(0.05)  # long enough that both workers take items
    return os.getpid(), torch.get_num_threads(), max(i["num_threads"] for i in threadpool_info()), x * x


def test_local_worker_pool_keeps_order_with_one_thread_each():
    ex = Executor("local", workers=2, max_in_flight=3)
    try:
        out = ex.map(pid_threads_square, range(12))
        again = ex.map(pid_threads_square, range(3))
        chunked = Executor("local", workers=2, max_in_flight=8).map(pid_threads_square, range(7))  # chunks of 2
    finally:
        shutdown()
    assert [r[3] for r in out] == [x * x for x in range(12)]  # input order kept with a window of 3
    pids = {r[0] for r in out}
    assert len(pids) == 2 and os.getpid() not in pids  # two other processes did the work
    assert {r[0] for r in again} | {r[0] for r in chunked} <= pids  # the pool is kept between calls until shutdown()
    assert [r[3] for r in chunked] == [x * x for x in range(7)]  # the last chunk is a short one
    assert {r[1] for r in out} == {1} and {r[2] for r in out} == {1}  # one torch and one BLAS / OpenMP thread each
    assert not Executor("local", workers=2).in_process and Executor("local").in_process


def test_unreachable_ray_address_fails_fast_in_one_line():
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(ComputeError, match=rf"compute.address='127.0.0.1:{port}': no Ray head answers there"):
        Executor("ray", address=f"127.0.0.1:{port}").map(abs, [1])
    assert time.monotonic() - t0 < 10


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with ray_cluster(tmp_path_factory.mktemp("ray"), nodes=2, cpus_per_node=1) as address:
        yield address


def _tiny_stemset(root: Path, sr: int = 16000) -> None:
    """2 train + 1 reference songs of 4 different-band stems, 2 s each: 12 stems to embed."""
    rng = np.random.default_rng(7)
    w = StemSetWriter(root, sr, 1)
    for i, split in enumerate(["train", "train", "reference"]):
        bands = [(40 + 300 * k, 400 + 900 * k + 50 * i) for k in range(4)]
        w.add_track(f"song{i}", split, {lab: band_noise(rng, 2 * sr, 1, sr, b) for lab, b in zip(LABELS, bands)})
    w.close()


def _embed(repo: Path, out: str, compute: dict, cache: str) -> str:
    params = {"contaminate": {"out": "data/contaminated", "preset": "none"},
              "embed": {"embedder": "mel", "device": "cpu", "out": out}, "compute": compute}
    (repo / f"params-{out}.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, **RAY_ENV, "STEMSIFT_CACHE": str(repo / cache),
           "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([str(BIN / "stemsift"), "embed", "--params", f"params-{out}.yaml"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_embed_on_a_two_node_ray_cluster_equals_local(tmp_path, cluster):
    _tiny_stemset(tmp_path / "data" / "contaminated")
    log = _embed(tmp_path, "emb-local", {"executor": "local"}, "cache-local")
    assert "12 stems" in log and "on local" in log
    assert cluster.startswith("127.0.0.1:")
    log = _embed(tmp_path, "emb-ray", {"executor": "ray", "address": cluster, "max_in_flight": 4}, "cache-ray")
    assert "12 stems" in log and "on ray" in log
    local, ray = _files(tmp_path / "emb-local" / "mel"), _files(tmp_path / "emb-ray" / "mel")
    assert len([k for k in local if k.endswith(".npy")]) == 12
    assert local == ray  # every embedding, the index and embedder.json: the same bytes


def test_embed_output_is_the_same_bytes_on_a_cold_and_a_warm_memo(tmp_path):
    """The embed stage's DVC output may not record how much came from the memo: a fresh clone (cold memo) and a
    rerun (warm memo) must give the same data hash."""
    _tiny_stemset(tmp_path / "data" / "contaminated")
    cold = _embed(tmp_path, "emb-cold", {"executor": "local"}, "cache-one")
    warm = _embed(tmp_path, "emb-warm", {"executor": "local"}, "cache-one")
    assert "12 of 12 stems computed" in cold and "0 of 12 stems computed" in warm
    assert _files(tmp_path / "emb-cold" / "mel") == _files(tmp_path / "emb-warm" / "mel")


# Runs in a fresh interpreter: Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, at import, and this test
# process must not import Ray with the Linux default (it would rewrite 127.0.0.1 and never reach the cluster).
PROBE = """
import json, os, sys
import ray
from stemsift.compute import Executor, shutdown

def pid_threads_square(x):
    import os, torch
    return os.getpid(), torch.get_num_threads(), x * x

ex = Executor("ray", address=sys.argv[1], max_in_flight=3)
out = ex.map(pid_threads_square, range(12))
print(json.dumps({"out": out, "gpus": ex.gpus(), "nodes": len([n for n in ray.nodes() if n["Alive"]])}))
shutdown()
"""


def test_ray_executor_order_threads_and_two_nodes(cluster):
    env = {**os.environ, **RAY_ENV, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", PROBE, cluster], env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [r[2] for r in got["out"]] == [x * x for x in range(12)]  # input order kept with a window of 3
    assert {r[1] for r in got["out"]} == {1}  # one torch thread per task
    assert got["gpus"] == 0.0 and got["nodes"] == 2  # no GPU in this cluster: CPU tasks; head + worker node


def _score(repo: Path, out: str, compute: dict) -> str:
    params = {"contaminate": {"out": "data/contaminated", "preset": "none"},
              "embed": {"embedder": "mel", "device": "cpu", "out": "emb-local"},
              "score": {"cleaner": "blind", "cleaners": ["fad", "leak", "blind"], "out": out}, "compute": compute}
    (repo / f"params-{out}.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, **RAY_ENV, "STEMSIFT_CACHE": str(repo / "cache-local"),
           "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([str(BIN / "stemsift"), "score", "--params", f"params-{out}.yaml"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


# degrade small enough for 3 songs of 2 s: learns from the collection, two song folds, one trimming round
DEGRADE = {"positives": "collection", "null_folds": 2, "segments": 2, "collection_segments": 2, "score_segments": 2,
           "iterations": 20, "trim": 0.25, "trim_rounds": 1}


@pytest.mark.slow  # end to end: embeds and scores five cleaners twice
def test_embed_and_score_with_local_workers_equal_the_in_process_loop(tmp_path, monkeypatch):
    """Two local worker processes: the same embedding bytes and the same score tables as the in-process loop."""
    from stemsift import compute
    from stemsift.embed import get_embedder
    from stemsift.embed.cache import embed_stemset
    from stemsift.stages.score import score_all
    from stemsift.stemset import StemSet

    _tiny_stemset(tmp_path / "stems")
    ss, embedder = StemSet(tmp_path / "stems"), get_embedder("mel", {}, device="cpu")
    cleaners = ["level", "fad", "leak", "degrade", "blind"]
    params = {"score": {"cleaner": "blind", "cleaners": cleaners}, "cleaners": {"degrade": DEGRADE}}
    runs = {}
    try:
        for name, ex in (("loop", Executor("local")), ("pool", Executor("local", workers=2, max_in_flight=3))):
            monkeypatch.setenv("STEMSIFT_CACHE", str(tmp_path / f"cache-{name}"))  # nothing reused between runs
            embed_stemset(ss, embedder, tmp_path / f"emb-{name}", ["train", "reference"], ex)
            tables, _ = score_all(ss, {**params, "compute": {"workers": ex.workers}}, cleaners, tmp_path / f"emb-{name}")
            runs[name] = (_files(tmp_path / f"emb-{name}"), tables)
        assert list(compute._POOLS) == [2]  # the second run did use two worker processes
    finally:
        shutdown()
    assert not compute._POOLS
    (emb, loop), (emb_pool, pool) = runs["loop"], runs["pool"]
    assert len([k for k in emb if k.endswith(".npy")]) == 12 and emb == emb_pool
    for name in cleaners:
        assert len(loop[name]) == 8 and np.isfinite(loop[name].score).all()
        pd.testing.assert_frame_equal(loop[name].drop(columns="seconds"), pool[name].drop(columns="seconds"))


def test_score_on_a_two_node_ray_cluster_equals_local(tmp_path, cluster):
    """FAD per stem and the coherence of every song as Ray tasks: the same score tables as the local loop."""
    _tiny_stemset(tmp_path / "data" / "contaminated")
    _embed(tmp_path, "emb-local", {"executor": "local"}, "cache-local")
    _score(tmp_path, "scores-local", {"executor": "local"})
    _score(tmp_path, "scores-ray", {"executor": "ray", "address": cluster, "max_in_flight": 2})
    for name in ("fad", "leak", "blind"):
        local = pd.read_parquet(tmp_path / "scores-local" / f"scores-{name}.parquet")
        ray = pd.read_parquet(tmp_path / "scores-ray" / f"scores-{name}.parquet")
        assert len(local) == 8 and np.isfinite(local.score).all()
        pd.testing.assert_frame_equal(local, ray)
