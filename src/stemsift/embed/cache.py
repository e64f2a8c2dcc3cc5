"""Embedding cache: one ``<sha1>.npy`` (frames x dim, float32) per stem, named by the stem's content hash, so
unchanged stems are never re-embedded — across ratio and cleaner sweeps (the DVC output stays put) and across
contamination changes (files are reused from the local memo)."""
from __future__ import annotations

import functools
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from stemsift import memo
from stemsift.progress import progress
from stemsift.stemset import StemSet

INFO = "embedder.json"
INDEX = "index.parquet"


def embed_stemset(ss: StemSet, embedder, folder: str | Path, splits: list[str], executor=None,
                  device: str = "auto") -> pd.DataFrame:
    """Embed every stem of the given splits into ``folder`` (a fresh, temporary directory). Stems missing from
    the memo are embedded by ``executor`` (stemsift.compute.Executor; None = in this process), one task each;
    Ray tasks run on a GPU when the cluster has one, unless ``device`` is 'cpu' (the embed.device param)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = embedder.config()
    shelf = memo.root() / "embed" / memo.key(config)
    shelf.mkdir(parents=True, exist_ok=True)
    rows = list(ss.stems[ss.stems.split.isin(splits)].drop_duplicates("sha1").itertuples())
    todo = [r for r in rows if not (shelf / f"{r.sha1}.npy").is_file()]
    jobs = ((ss.load(r.track_id, r.label), ss.sample_rate) for r in todo)  # lazy: audio read as tasks are sent
    # a model on this machine's GPU stays in this process (local worker processes embed on the CPU)
    if executor is None or executor.in_process or (executor.kind == "local" and embedder.device != "cpu"):
        results = (_embed(embedder, job) for job in jobs)
    else:  # each task rebuilds the embedder once per worker process from (name, options, device)
        gpu = device != "cpu" and executor.gpus() > 0
        spec = (embedder.name, json.dumps(embedder.options, sort_keys=True), "cuda" if gpu else "cpu")
        results = executor.imap(functools.partial(embed_task, spec), jobs, gpus=gpu)
    for r, e in zip(todo, progress(results, len(todo), "embed", "stems")):
        kept = shelf / f"{r.sha1}.npy"
        tmp = kept.with_name(f".{r.sha1}.{os.getpid()}.npy")
        np.save(tmp, e)
        os.replace(tmp, kept)
    index = []
    for r in rows:
        kept = shelf / f"{r.sha1}.npy"
        _link_or_copy(kept, folder / f"{r.sha1}.npy")
        index.append({"sha1": r.sha1, "frames": int(np.load(kept, mmap_mode="r").shape[0])})
    # what was computed here and what came from the memo is said, not stored: the output's bytes (its DVC hash) are
    # the same on a warm memo and a cold one
    print(f"embed: {len(todo)} of {len(rows)} stems computed, the rest from the memo")
    info = {"config": config, "sample_rate": embedder.sample_rate, "dim": embedder.dim,
            "hop_seconds": embedder.hop_seconds, "stems": len(index)}
    (folder / INFO).write_text(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
    table = pd.DataFrame(index).sort_values("sha1").reset_index(drop=True)
    table.to_parquet(folder / INDEX, index=False)
    return table


def _embed(embedder, job) -> np.ndarray:
    audio, sample_rate = job
    return np.asarray(embedder.embed(audio, sample_rate), dtype=np.float32)


@functools.lru_cache(maxsize=4)
def _worker_embedder(name: str, options_json: str, device: str):
    """One embedder per (config, device) per worker process: model weights load once, not once per stem."""
    from stemsift.embed import get_embedder

    return get_embedder(name, json.loads(options_json), device=device)


def embed_task(spec: tuple[str, str, str], job) -> np.ndarray:
    """A Ray task's body: spec = (embedder name, options as JSON, device), job = (audio, sample rate)."""
    return _embed(_worker_embedder(*spec), job)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


class EmbeddingStore:
    """Read side: ``store(sha1)`` -> (frames, dim) float32; a missing stem fails naming the folder."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not (self.folder / INFO).is_file():
            raise FileNotFoundError(f"{self.folder / INFO}: missing (run `stemsift embed` / `dvc repro embed`)")
        self.info = json.loads((self.folder / INFO).read_text())

    def __call__(self, sha1: str) -> np.ndarray:
        path = self.folder / f"{sha1}.npy"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no embedding for this stem (embeddings older than the stem set?)")
        return np.load(path)
