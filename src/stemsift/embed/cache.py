"""Embedding cache: one ``<sha1>.npy`` (frames x dim, float32) per stem, named by the stem's content hash, so
unchanged stems are never re-embedded — across ratio and cleaner sweeps (the DVC output stays put) and across
contamination changes (files are reused from the local memo)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from stemsift import memo
from stemsift.stemset import StemSet

INFO = "embedder.json"
INDEX = "index.parquet"


def embed_stemset(ss: StemSet, embedder, folder: str | Path, splits: list[str]) -> pd.DataFrame:
    """Embed every stem of the given splits into ``folder`` (a fresh, temporary directory)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = embedder.config()
    shelf = memo.root() / "embed" / memo.key(config)
    shelf.mkdir(parents=True, exist_ok=True)
    rows = ss.stems[ss.stems.split.isin(splits)]
    index, computed = [], 0
    for r in rows.drop_duplicates("sha1").itertuples():
        kept = shelf / f"{r.sha1}.npy"
        if not kept.is_file():
            e = np.asarray(embedder.embed(ss.load(r.track_id, r.label), ss.sample_rate), dtype=np.float32)
            tmp = kept.with_name(f".{r.sha1}.{os.getpid()}.npy")
            np.save(tmp, e)
            os.replace(tmp, kept)
            computed += 1
        _link_or_copy(kept, folder / f"{r.sha1}.npy")
        index.append({"sha1": r.sha1, "frames": int(np.load(kept, mmap_mode="r").shape[0])})
    info = {"config": config, "sample_rate": embedder.sample_rate, "dim": embedder.dim,
            "hop_seconds": embedder.hop_seconds, "stems": len(index), "computed": computed}
    (folder / INFO).write_text(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
    table = pd.DataFrame(index).sort_values("sha1").reset_index(drop=True)
    table.to_parquet(folder / INDEX, index=False)
    return table


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
