"""Cleaner scoring cost at the default size (100 training + 20 reference songs x 4 stems of the embedded
default set, mel embeddings), every cleaner side by side in one run, plus its detection AUC.

    dvc repro embed && python bench/bench_clean.py [--cleaners random fad mlp confident]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from stemsift.catalogue import TRUTH
from stemsift.clean import StemView, get_cleaner
from stemsift.clean.metrics import detection
from stemsift.embed.cache import EmbeddingStore
from stemsift.params import ContaminateParams, EmbedParams, ScoreParams, load_params, stage_params
from stemsift.stemset import StemSet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--cleaners", nargs="+", default=None)
    args = ap.parse_args()
    params = load_params(args.params)
    c = stage_params(params, "contaminate", ContaminateParams)
    e = stage_params(params, "embed", EmbedParams)
    s = stage_params(params, "score", ScoreParams)
    ss = StemSet(c.out)
    t0 = time.perf_counter()
    store = EmbeddingStore(e.folder)
    view = StemView.of(ss, store)
    view.embed(pd.concat([view.train, view.reference]))  # warm the page cache: time the cleaners, not the disk
    load = time.perf_counter() - t0
    truth = pd.read_parquet(Path(c.out) / TRUTH) if (Path(c.out) / TRUTH).is_file() else None
    print(f"{len(view.train)} training stems, {len(view.reference)} reference stems, {e.embedder} "
          f"{store.info['dim']}-d; embeddings read in {load:.1f} s")
    print(f"{'cleaner':10s} {'seconds':>8s} {'stems/s':>8s} {'song AUC':>8s} {'stem AUC':>8s}")
    for name in args.cleaners or s.cleaners:
        cleaner = get_cleaner(name, dict(params.get(name) or {}), seed=s.seed)
        t0 = time.perf_counter()
        table = cleaner.score(view)
        secs = time.perf_counter() - t0
        m = detection(table, truth, []) if truth is not None else {}
        auc = lambda k: m.get(k, {}).get("all") or float("nan")  # noqa: E731
        print(f"{name:10s} {secs:8.2f} {len(table) / secs:8.0f} {auc('song_auc'):8.3f} {auc('stem_auc'):8.3f}")


if __name__ == "__main__":
    main()
