"""Stage `embed`: frame embeddings of every train and reference stem with the configured embedder, one
``<sha1>.npy`` per stem under data/embeddings/<embedder> (a DVC output that ratio/cleaner sweeps reuse).
Stems are embedded by the `compute` executor (local loop or Ray tasks); `compute` is deliberately not a
DVC param of this stage: where the work runs does not change the output (tested byte for byte)."""
from __future__ import annotations

import time

from stemsift.compute import executor_from_params, shutdown
from stemsift.embed import get_embedder
from stemsift.embed.cache import embed_stemset
from stemsift.params import ComputeParams, ContaminateParams, EmbedParams, stage_params
from stemsift.separate.model import resolve_device
from stemsift.stemset import StemSet, atomic_dir


def run(params: dict):
    c = stage_params(params, "contaminate", ContaminateParams)
    e = stage_params(params, "embed", EmbedParams)
    executor = executor_from_params(stage_params(params, "compute", ComputeParams))
    ss = StemSet(c.out)
    embedder = get_embedder(e.embedder, e.options(), device=str(resolve_device(e.device, "embed.device")))
    t0 = time.perf_counter()
    try:
        with atomic_dir(e.folder) as tmp:
            index = embed_stemset(ss, embedder, tmp, list(e.splits), executor, e.device)
    finally:
        shutdown()
    secs = time.perf_counter() - t0
    print(f"embed: {len(index)} stems with {e.embedder} ({embedder.dim}-d, {int(index.frames.sum())} frames) "
          f"in {secs:.1f} s on {executor.kind} -> {e.folder}")
    return index
