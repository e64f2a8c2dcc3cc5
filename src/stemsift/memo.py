"""Content-addressed memo of deterministic results (trained models, evaluation tables) shared between
stages: when two training sets select exactly the same stems with the same params (e.g. `cleaned` while no
cleaner is configured), the second stage copies the first one's result instead of recomputing it."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path


def root() -> Path:
    return Path(os.environ.get("STEMSIFT_CACHE", ".stemsift-cache"))


def key(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def files_sha1(folder: str | Path) -> dict[str, str]:
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def code_version(*modules) -> str:
    """Hash of the source files of the modules a result depends on: changed code never reuses old results."""
    return key([hashlib.sha1(Path(m.__file__).read_bytes()).hexdigest() for m in modules])


def lookup(kind: str, k: str) -> Path | None:
    p = root() / kind / k
    return p if p.is_dir() else None


def store(kind: str, k: str, folder: str | Path) -> None:
    """Copy a finished result folder into the memo (atomically; a concurrent writer of the same key is fine)."""
    final = root() / kind / k
    if final.is_dir():
        return
    tmp = final.with_name(f".{k}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(folder, tmp)
    try:
        os.replace(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
