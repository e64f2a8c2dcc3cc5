"""A DVC remote on the S3 API (moto's server on 127.0.0.1): one repository pushes two tagged versions of a stem
set, a second repository `dvc import`s the first version back through S3 (the pushing repo's cache is gone)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import band_noise
from services import S3_ENV, s3_keys, s3_server
from stemsift import LABELS
from stemsift.stemset import StemSetWriter

BIN = Path(sys.executable).parent
BUCKET = "stems"


def sh(cmd: str, cwd: Path, env: dict) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env, shell=True, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, f"{cmd}\n{out.stdout}\n{out.stderr}"
    return out.stdout


def write_set(root: Path, songs: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    w = StemSetWriter(root, 8000, 1)
    for i in range(songs):
        w.add_track(f"song{i}", "train", {lab: band_noise(rng, 8000, 1, 8000, (100 + 500 * k, 600 + 500 * k))
                                           for k, lab in enumerate(LABELS)})
    w.close()


@pytest.fixture
def s3(tmp_path):
    with s3_server(tmp_path, buckets=(BUCKET,)) as url:
        yield url


def test_dvc_import_a_tagged_stem_set_through_an_s3_remote(tmp_path, s3):
    env = {**os.environ, **S3_ENV, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    a = tmp_path / "producer"
    a.mkdir()
    sh("git init -q && dvc init -q && dvc config core.analytics false", a, env)
    # The remote (bucket, prefix, endpoint) is committed; credentials stay in the environment (or .dvc/config.local).
    sh(f"dvc remote add -d store s3://{BUCKET}/dvcstore && dvc remote modify store endpointurl {s3}", a, env)
    write_set(a / "data" / "filtered", songs=3, seed=0)
    sh("dvc add -q data/filtered && git add -A && git commit -qm v1 && git tag v1 && dvc push -q", a, env)
    shutil.rmtree(a / "data" / "filtered")
    write_set(a / "data" / "filtered", songs=2, seed=1)  # v2: another cleaned version
    sh("dvc add -q data/filtered && git add -A && git commit -qm v2 && git tag v2 && dvc push -q", a, env)
    keys = s3_keys(s3, BUCKET, "dvcstore/")
    assert len(keys) >= (3 + 2) * 5 + 2  # every stem and mixture of both versions, plus two .dir manifests
    shutil.rmtree(a / ".dvc" / "cache")  # from here on the only copy of the data is in the S3 bucket

    b = tmp_path / "consumer"
    b.mkdir()
    sh("git init -q && dvc init -q && dvc config core.analytics false", b, env)
    sh(f"dvc import {a} data/filtered -o stems --rev v1", b, env)
    sh("stemsift validate stems", b, env)
    manifest = pd.read_parquet(b / "stems" / "manifest.parquet")
    assert sorted(manifest.track_id.unique()) == ["song0", "song1", "song2"]  # v1, not the workspace's v2
    import yaml
    lock = yaml.safe_load((b / "stems.dvc").read_text())
    assert lock["deps"][0]["repo"]["rev"] == "v1" and lock["outs"][0]["md5"].endswith(".dir")
    sh("dvc update -q --rev v2 stems.dvc", b, env)  # follow the producer to its next version
    assert sorted(pd.read_parquet(b / "stems" / "manifest.parquet").track_id.unique()) == ["song0", "song1"]
