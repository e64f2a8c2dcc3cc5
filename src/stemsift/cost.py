"""Wall time and peak memory of a stage, written as a small DVC metrics file (metrics/cost/<stage>.json)."""
from __future__ import annotations

import contextlib
import json
import resource
import time
from pathlib import Path
from typing import Iterator


def peak_mb() -> float:
    """Peak resident memory of this process and its (finished) children, in MB (Linux reports KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024


@contextlib.contextmanager
def stage_cost(name: str, folder: str | Path = "metrics/cost", extra: dict | None = None) -> Iterator[dict]:
    """Time the block; on success write {seconds, peak_mb, ...extra} to <folder>/<name>.json."""
    info: dict = dict(extra or {})
    t0 = time.perf_counter()
    yield info
    info.update(seconds=round(time.perf_counter() - t0, 2), peak_mb=round(peak_mb(), 1))
    path = Path(folder) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
