"""Blind cleaners, variant by variant: song AUC, stem AUC per defect kind and seconds on one contaminated set.

The issue's question is *why* attribution by unlearning and FAD detect little, so every variant is scored by
the real cleaner code (the score stage's functions) on the pipeline's own outputs, and the table says which
lever moves detection:

    dvc repro score                                    # stems, embeddings, baseline separator
    python bench/bench_blind.py                        # every group on data/contaminated
    python bench/bench_blind.py --groups fad leak      # a subset
    python bench/bench_blind.py --json metrics/bench/blind-mixed.json   # keep the table

Groups: unlearning (paper variant, weight subsets, energy-normalised loss, cosine), unlearning_exact (AbU's exact
mode, 1 and 8 ascent steps: minutes each), fad (pooled vs nearest reference, calibration, song aggregation), leak, loss, fusion.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from stemsift.catalogue import TRUTH
from stemsift.clean import CleanerError, StemView, get_cleaner
from stemsift.clean.metrics import detection
from stemsift.embed.cache import EmbeddingStore
from stemsift.stemset import StemSet

PAPER_UNLEARNING = {"mode": "first_order", "lr": 3e-6, "steps": 1}
VARIANTS = {
    "unlearning": [
        ("unlearning: paper (first-order, all weights, MSE, unified)", "unlearning", {"deflate": False}),
        ("unlearning: head weights only (fc2/fc3)", "unlearning", {"params": "head", "deflate": False}),
        ("unlearning: LSTM weights only", "unlearning", {"params": "lstm", "deflate": False}),
        ("unlearning: loss / target energy (nmse)", "unlearning", {"loss": "nmse", "deflate": False}),
        ("unlearning: nmse + cosine", "unlearning", {"loss": "nmse", "normalize": "cosine", "deflate": False}),
        ("unlearning: nmse, 6 segments", "unlearning", {"loss": "nmse", "segments": 6, "deflate": False}),
        ("unlearning: deflated (leading singular component removed; default)", "unlearning", {}),
        ("unlearning: deflated, head weights", "unlearning", {"params": "head"}),
    ],
    "unlearning_exact": [
        ("unlearning: exact, 1 step (the paper's AbU setting)", "unlearning", {"mode": "exact", "deflate": False}),
        ("unlearning: exact, 8 ascent steps, lr 1e-5", "unlearning", {"mode": "exact", "steps": 8, "lr": 1e-5,
                                                                      "deflate": False}),
    ],
    "fad": [
        ("fad: pooled, FAD / label median, mean (before)", "fad", {"reference": "pooled", "calibration": "median"}),
        ("fad: pooled, reference z, mean", "fad", {"reference": "pooled", "calibration": "reference"}),
        ("fad: nearest k=1, reference z, mean", "fad", {"k": 1}),
        ("fad: nearest k=3, reference z, mean", "fad", {"k": 3}),
        ("fad: nearest k=3, reference z, min", "fad", {"k": 3, "song": "min"}),
        ("fad: nearest k=5, reference z, mean", "fad", {"k": 5}),
    ],
    "leak": [("leak: stem coherence, n_fft 2048", "leak", {}),
             ("leak: n_fft 1024", "leak", {"n_fft": 1024, "hop": 256})],
    "loss": [("loss: nmse, 6 segments, mean over targets", "loss", {}),
             ("loss: nmse, 6 segments, worst target", "loss", {"song": "min"})],
    "fusion": [("blind = fad + leak, max_z", "blind", {"components": ["fad", "leak"]}),
               ("blind = fad + leak, rank_mean", "blind", {"components": ["fad", "leak"], "fusion": "rank_mean"}),
               ("blind = fad + leak + loss, max_z", "blind", {"components": ["fad", "leak", "loss"]}),
               ("hybrid = blind + mlp, max_z", "hybrid", {"components": ["blind", "mlp"]}),
               ("hybrid = blind + mlp, rank_mean", "hybrid", {"components": ["blind", "mlp"], "fusion": "rank_mean"}),
               ("mlp (specialist, for comparison)", "mlp", {})],
}


def row(name: str, metrics: dict, seconds: float) -> dict:
    out = {"variant": name, "song_auc": metrics["song_auc"]["all"]}
    out.update({f"song_auc_{k}": v for k, v in metrics["song_auc"].items() if k != "all"})
    out["stem_auc"] = metrics["stem_auc"]["all"]
    out.update({f"stem_auc_{k}": v for k, v in metrics["stem_auc"].items() if k != "all"})
    out["seconds"] = round(seconds, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stems", default="data/contaminated")
    ap.add_argument("--embeddings", default="data/embeddings/mel")
    ap.add_argument("--baseline", default="models/baseline")
    ap.add_argument("--groups", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--json", help="also write the table here")
    a = ap.parse_args()
    ss = StemSet(a.stems)
    truth = pd.read_parquet(Path(a.stems) / TRUTH)
    view = StemView.of(ss, EmbeddingStore(a.embeddings))
    components = {"fad": {}, "leak": {}, "loss": {"model": a.baseline}, "mlp": {}}
    rows = []
    for group in a.groups:
        for name, cleaner, options in VARIANTS[group]:
            if cleaner in ("unlearning", "loss"):
                options = {"model": a.baseline, **options}
            if cleaner in ("blind", "hybrid"):  # the default-option components, scored once and shared
                for comp in options["components"]:
                    if comp not in view.scores:
                        sub = {"components": ["fad", "leak"]} if comp == "blind" else components.get(comp, {})
                        if comp == "blind":
                            for c in sub["components"]:
                                view.scores.setdefault(c, get_cleaner(c, components[c]).score(view))
                        view.scores[comp] = get_cleaner(comp, sub).score(view)
            t0 = time.perf_counter()
            try:
                table = get_cleaner(cleaner, options).score(view)
            except CleanerError as e:  # e.g. a large ascent step that diverges: a row saying so, not a crash
                rows.append({"variant": name, "error": str(e), "seconds": round(time.perf_counter() - t0, 1)})
                print(rows[-1], flush=True)
                continue
            rows.append(row(name, detection(table, truth, [0.75]), time.perf_counter() - t0))
            print(" | ".join(f"{v}" for v in rows[-1].values()), flush=True)
    df = pd.DataFrame(rows)
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(df.to_string(index=False))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({"stems": a.stems, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
