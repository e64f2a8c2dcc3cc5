"""The automatic keep ratio at four noise levels: r_auto vs the true clean share, per preset, cleaner and method.

Contaminates the prepared stem set (data/raw) with each preset into a temporary folder, embeds it (mel; the
embedding memo makes repeats cheap), scores it with cleaners that need no trained baseline, and runs every
estimator of `filter.ratio: auto` on the song scores:

    dvc repro prepare
    python bench/bench_ratio.py                                  # none, mixed25, mixed, effects
    python bench/bench_ratio.py --presets mixed --cleaners blind mlp --json metrics/bench/ratio.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import pandas as pd

from stemsift.catalogue import TRUTH
from stemsift.clean import StemView, get_cleaner
from stemsift.clean.metrics import song_truth
from stemsift.clean.ratio import auto_keep
from stemsift.embed import get_embedder
from stemsift.embed.cache import EmbeddingStore, embed_stemset
from stemsift.params import ContaminateParams, load_params, stage_params
from stemsift.stages.contaminate import contaminate_stemset
from stemsift.stages.score import scoring_order
from stemsift.stemset import StemSet

def contaminated(raw: StemSet, preset: str, out: Path) -> StemSet:
    p = dataclasses.replace(stage_params(load_params(), "contaminate", ContaminateParams), preset=preset)
    contaminate_stemset(raw, out, p)
    return StemSet(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw", default="data/raw")
    ap.add_argument("--presets", nargs="+", default=["none", "mixed25", "mixed", "effects"])
    ap.add_argument("--cleaners", nargs="+", default=["blind", "fad", "leak", "mlp"])
    ap.add_argument("--methods", nargs="+", default=["gmm", "beta", "cleanlab"])
    ap.add_argument("--json")
    a = ap.parse_args()
    params = load_params()
    raw = StemSet(a.raw)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in a.presets:
            ss = contaminated(raw, preset, Path(tmp) / preset)
            embed_stemset(ss, get_embedder("mel", params["embed"].get("mel", {})), Path(tmp) / f"emb-{preset}",
                          ["train", "reference"])
            view = StemView.of(ss, EmbeddingStore(Path(tmp) / f"emb-{preset}"))
            truth = song_truth(pd.read_parquet(Path(ss.root) / TRUTH))
            clean = set(truth[truth == "clean"].index)
            for name in scoring_order(params, a.cleaners, 0):
                t0 = time.perf_counter()
                view.scores[name] = get_cleaner(name, (params.get("cleaners") or {}).get(name)).score(view)
                if name not in a.cleaners:
                    continue
                songs = view.scores[name].groupby("track_id").song_score.first()
                for method in a.methods:
                    if method == "cleanlab" and "p_vocals" not in view.scores[name]:
                        continue
                    r = auto_keep(songs, method, stems=view.scores[name])
                    rows.append({"preset": preset, "cleaner": name, "method": method, "r_auto": round(r.ratio, 3),
                                 "clean_share_true": round(len(clean) / len(songs), 3),
                                 "error": round(r.ratio - len(clean) / len(songs), 3),
                                 "clean_in_kept": round(len(r.keep & clean) / len(r.keep), 3),
                                 "clean_share_est": round(r.clean_share, 3), "warning": r.warning[:60],
                                 "seconds": round(time.perf_counter() - t0, 1)})
                    print(" | ".join(str(v) for v in rows[-1].values()), flush=True)
    df = pd.DataFrame(rows)
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(df.to_string(index=False))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
