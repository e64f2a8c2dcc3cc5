"""Stage `embed`: frame embeddings of every train and reference stem with the configured embedder, one
``<sha1>.npy`` per stem under data/embeddings/<embedder> (a DVC output that ratio/cleaner sweeps reuse)."""
from __future__ import annotations

import time

from stemsift.embed import get_embedder
from stemsift.embed.cache import embed_stemset
from stemsift.params import ContaminateParams, EmbedParams, stage_params
from stemsift.separate.model import resolve_device
from stemsift.stemset import StemSet, atomic_dir


def run(params: dict):
    c = stage_params(params, "contaminate", ContaminateParams)
    e = stage_params(params, "embed", EmbedParams)
    ss = StemSet(c.out)
    embedder = get_embedder(e.embedder, e.options(), device=str(resolve_device(e.device, "embed.device")))
    t0 = time.perf_counter()
    with atomic_dir(e.folder) as tmp:
        index = embed_stemset(ss, embedder, tmp, list(e.splits))
    secs = time.perf_counter() - t0
    print(f"embed: {len(index)} stems with {e.embedder} ({embedder.dim}-d, {int(index.frames.sum())} frames) "
          f"in {secs:.1f} s -> {e.folder}")
    return index
