"""Stage `evaluate@<set>`: separate every clean test song with each seed's Separator, museval v4 SDR."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from stemsift import LABELS, memo
from stemsift.classify.refine import classifier_for
from stemsift.params import ContaminateParams, EvaluateParams, RefineParams, TrainParams, stage_params
from stemsift.separate import model as sepmodel
from stemsift.separate.evaluate import EVAL_DIR, museval_pool, summarize
from stemsift.separate.mixit_eval import summarize_mixit
from stemsift.separate.scoring import score_model
from stemsift.stemset import StemSet, atomic_file
from stemsift.tracking import log_final_metrics, runs_file


def run(params: dict, set_name: str) -> dict:
    c = stage_params(params, "contaminate", ContaminateParams)
    t = stage_params(params, "train", TrainParams)
    e = stage_params(params, "evaluate", EvaluateParams)
    ss = StemSet(c.out)
    runs = json.loads(runs_file(set_name).read_text())
    device = sepmodel.resolve_device(t.device)
    tables, summaries, catalogue_rows = [], {}, []
    psi = None
    if set_name == "cleaned" and t.method == "mixit":
        try:
            psi = classifier_for(t.mixit.classifier, stage_params(params, "refine", RefineParams).out)
        except FileNotFoundError as err:  # no Ψ: the oracle mapping stands in, and says so
            print(f"evaluate@{set_name}: {err}; 4-target SDR from the oracle mapping only")
    code = memo.code_key(__name__)  # this stage and every stemsift module it imports: edited code never reuses
    pool = museval_pool(e.workers) if e.workers > 1 else None  # one set of museval workers for every seed
    # each song's audio identity (its stems' sha1s): evidence pairs sets by it, not by track id or position
    song_sha1 = ss.stems.sort_values("label").groupby("track_id").sha1.agg(lambda h: memo.key(list(h))[:16])
    for seed in t.seeds:
        per_track = score_model(ss, Path(t.out) / set_name / f"seed{seed}", e.niter, e.workers, device, code,
                                psi, pool).assign(seed=seed)
        per_track["song_sha1"] = per_track.track_id.map(song_sha1)
        s = summarize_mixit(per_track) if "mapping" in per_track else summarize(per_track)
        run = runs[str(seed)]
        log_final_metrics(run["mlflow_run_id"], s)
        summaries[seed] = s
        tables.append(per_track)
        catalogue_rows.append({"run_name": f"{set_name}-seed{seed}", "train_set": set_name, "seed": seed,
                               "mlflow_run_id": run["mlflow_run_id"], "stemset_hash": run["stemset_hash"],
                               "params_hash": run["params_hash"], "method": run.get("method", "supervised"),
                               "train_seconds": run["seconds"], "created": pd.Timestamp.now(tz="UTC"),
                               **{k: s.get(k) for k in [f"sdr_{x}" for x in LABELS] + ["sdr_avg", "sdr_utt_avg"]}})
    if pool is not None:
        pool.shutdown()
    keys = [k for k, v in next(iter(summaries.values())).items() if not isinstance(v, str)]
    metrics = {}
    for k in keys:  # mean over seeds, and the seed-to-seed spread of the headline numbers
        vals = np.array([summaries[s][k] for s in t.seeds], dtype=float)
        metrics[k] = round(float(np.nanmean(vals)), 3)
        if k.startswith("sdr_") and not k.startswith("sdr_utt"):  # sample std (ddof 1): none from one seed
            metrics[f"{k}_std"] = round(float(np.nanstd(vals, ddof=1)), 3) if np.isfinite(vals).sum() > 1 else None
    metrics["seeds"] = len(t.seeds)
    if "mapping" in per_track:
        metrics["method"] = "mixit"
        metrics["mapping"] = summaries[t.seeds[0]]["mapping"]
    with atomic_file(EVAL_DIR / f"{set_name}.csv") as tmp:
        pd.concat(tables).to_csv(tmp, index=False, float_format="%.4f")
    with atomic_file(EVAL_DIR / f"{set_name}.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    with atomic_file(Path("data/runs") / f"runs-{set_name}.parquet") as tmp:
        pd.DataFrame(catalogue_rows).to_parquet(tmp, index=False)
    print(f"evaluate@{set_name}: SDR avg {metrics['sdr_avg']} ± {metrics['sdr_avg_std']} dB over {len(t.seeds)} seeds "
          f"(" + ", ".join(f"{x} {metrics[f'sdr_{x}']}" for x in LABELS) + ")")
    return metrics
