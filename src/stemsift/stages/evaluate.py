"""Stage `evaluate@<set>`: separate every clean test song with each seed's Separator, museval v4 SDR."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from stemsift import LABELS
from stemsift.audio import resample
from stemsift import memo
from stemsift.params import ContaminateParams, EvaluateParams, TrainParams, stage_params
from stemsift.separate import model as sepmodel
from stemsift.separate import evaluate as separate_evaluate
from stemsift.separate.evaluate import score_tracks, summarize
from stemsift.separate.train import separate_track
from stemsift.stages.train import runs_file
from stemsift.stemset import StemSet, atomic_file
from stemsift.tracking import log_final_metrics

PER_TRACK = Path("metrics/eval")


def separate_tracks(ss: StemSet, folder: Path, track_ids: list[str], niter: int, device):
    """Yield (track_id, references, estimates) for the given songs, at the model's sample rate."""
    models, cfg, _ = sepmodel.load(folder, str(device))
    sep = sepmodel.separator(models, cfg, niter=niter).to(device)
    for tid in track_ids:
        refs = {t: resample(x, ss.sample_rate, cfg.sample_rate) for t, x in ss.load_track(tid).items()}
        mix = np.sum([refs[t] for t in LABELS], axis=0)  # the exact sum (the written mixture, resampled)
        yield tid, refs, separate_track(sep, mix, device)


def score_model(ss: StemSet, folder: Path, e: EvaluateParams, device) -> pd.DataFrame:
    """Per-track scores of one trained separator; memoised by model files, test stems and evaluate params."""
    models_meta = json.loads((folder / "separator.json").read_text())
    test = ss.track_ids("test")
    mkey = memo.key({"model": memo.files_sha1(folder), "niter": e.niter, "device": str(device),
                     "code": memo.code_version(sepmodel, separate_evaluate),
                     "test": ss.stems[ss.stems.track_id.isin(test)].sha1.tolist()})
    if (cached := memo.lookup("evaluate", mkey)) is not None:
        return pd.read_parquet(cached / "per_track.parquet")
    # Separate a chunk with all cores, then museval it with all cores: overlapping them makes torch's idle
    # OpenMP threads spin against the museval workers (measured: several times slower on 2 cores).
    chunk = max(2 * e.workers, 4)
    df = pd.concat([score_tracks(list(separate_tracks(ss, folder, test[i:i + chunk], e.niter, device)),
                                 models_meta["model"]["sample_rate"], workers=e.workers)
                    for i in range(0, len(test), chunk)], ignore_index=True)
    with tempfile.TemporaryDirectory() as tmp:
        df.to_parquet(Path(tmp) / "per_track.parquet", index=False)
        memo.store("evaluate", mkey, tmp)
    return df


def run(params: dict, set_name: str) -> dict:
    c = stage_params(params, "contaminate", ContaminateParams)
    t = stage_params(params, "train", TrainParams)
    e = stage_params(params, "evaluate", EvaluateParams)
    ss = StemSet(c.out)
    runs = json.loads(runs_file(set_name).read_text())
    device = sepmodel.resolve_device(t.device)
    tables, summaries, catalogue_rows = [], {}, []
    for seed in t.seeds:
        per_track = score_model(ss, Path(t.out) / set_name / f"seed{seed}", e, device).assign(seed=seed)
        s = summarize(per_track)
        run = runs[str(seed)]
        log_final_metrics(run["mlflow_run_id"], s)
        summaries[seed] = s
        tables.append(per_track)
        catalogue_rows.append({"run_name": f"{set_name}-seed{seed}", "train_set": set_name, "seed": seed,
                               "mlflow_run_id": run["mlflow_run_id"], "stemset_hash": run["stemset_hash"],
                               "params_hash": run["params_hash"], "method": t.method,
                               "train_seconds": run["seconds"], "created": pd.Timestamp.now(tz="UTC"),
                               **{k: s.get(k) for k in [f"sdr_{x}" for x in LABELS] + ["sdr_avg", "sdr_utt_avg"]}})
    keys = list(next(iter(summaries.values())))
    metrics = {}
    for k in keys:  # mean over seeds, and the seed-to-seed spread of the headline numbers
        vals = np.array([summaries[s][k] for s in t.seeds], dtype=float)
        metrics[k] = round(float(np.nanmean(vals)), 3)
        if k.startswith("sdr_") and not k.startswith("sdr_utt"):
            metrics[f"{k}_std"] = round(float(np.nanstd(vals)), 3)
    metrics["seeds"] = len(t.seeds)
    with atomic_file(PER_TRACK / f"{set_name}.csv") as tmp:
        pd.concat(tables).to_csv(tmp, index=False, float_format="%.4f")
    with atomic_file(PER_TRACK / f"{set_name}.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    with atomic_file(Path("data/runs") / f"runs-{set_name}.parquet") as tmp:
        pd.DataFrame(catalogue_rows).to_parquet(tmp, index=False)
    print(f"evaluate@{set_name}: SDR avg {metrics['sdr_avg']} ± {metrics['sdr_avg_std']} dB over {len(t.seeds)} seeds "
          f"(" + ", ".join(f"{x} {metrics[f'sdr_{x}']}" for x in LABELS) + ")")
    return metrics
