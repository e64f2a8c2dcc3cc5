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
import torch

from stemsift.classify import model as clsmodel
from stemsift.classify.model import probability_fn
from stemsift.params import ContaminateParams, EvaluateParams, RefineParams, TrainParams, stage_params
from stemsift.separate import mixit_eval, mixit_model
from stemsift.separate.mixit_eval import (fuss_metrics, oracle_mapping, semantic_mapping, separate_outputs,
                                          targets_from_mapping)
from stemsift.separate.mixit_model import load_mixit
from stemsift.separate import model as sepmodel
from stemsift.separate import evaluate as separate_evaluate
from stemsift.separate.evaluate import score_tracks, summarize
from stemsift.separate.train import separate_track
from stemsift.stages.train import mixit_classifier, runs_file
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


def mixit_outputs(ss: StemSet, folder: Path, track_ids: list[str], psi: Path | None, device):
    """Per song: (track_id, references, outputs (M, frames, ch), Ψ's probabilities per output (M, 4) or None,
    FUSS scores of the song mixture, single-source reconstruction SI-SNR per non-silent stem fed alone)."""
    model, cfg, _ = load_mixit(folder, str(device))
    classify = probability_fn(clsmodel.load(psi, str(device)), cfg.sample_rate) if psi else None
    for tid in track_ids:
        refs = {t: resample(x, ss.sample_rate, cfg.sample_rate) for t, x in ss.load_track(tid).items()}
        stack = np.stack([refs[t] for t in LABELS])
        mix = stack.sum(0)
        outs = separate_outputs(model, mix, device)
        probs = None
        if classify is not None:
            with torch.no_grad():
                probs = classify(torch.from_numpy(np.ascontiguousarray(outs.transpose(0, 2, 1), np.float32)).to(device)).cpu().numpy()
        single = [fuss_metrics(separate_outputs(model, x, device), x[None], x)["ss"]
                  for x in stack if np.sqrt(np.mean(x.astype(np.float64) ** 2)) > 1e-4]
        yield tid, refs, outs, probs, fuss_metrics(outs, stack, mix), single


def score_mixit(ss: StemSet, folder: Path, e: EvaluateParams, psi: Path | None, device) -> pd.DataFrame:
    """A MixIT separator: museval of the 4 targets built from its outputs by the semantic mapping (Ψ's class of
    each output; `mapping` = semantic) and by the oracle mapping (each output to the reference it matches best;
    an upper bound, `mapping` = oracle), plus FUSS-style SI-SNR columns (repeated on each row of a song)."""
    test = ss.track_ids("test")
    items, extra = {"semantic": [], "oracle": []}, []
    for tid, refs, outs, probs, fuss, single in mixit_outputs(ss, folder, test, psi, device):
        stack = np.stack([refs[t] for t in LABELS])
        for kind, mapping in (("semantic", semantic_mapping(probs) if probs is not None else None),
                              ("oracle", oracle_mapping(outs, stack))):
            if mapping is not None:
                est = targets_from_mapping(outs, mapping, len(LABELS))
                items[kind].append((tid, refs, {t: est[i] for i, t in enumerate(LABELS)}))
        extra.append({"track_id": tid, "si_snri": fuss["msi"], "si_snr_single": float(np.nanmean(single)) if single else np.nan,
                      "active_outputs": fuss["num_active_seps"]})
    sr = json.loads((folder / "separator.json").read_text())["model"]["sample_rate"]  # no second model load
    frames = [score_tracks(v, sr, workers=e.workers).assign(mapping=k) for k, v in items.items() if v]
    return pd.concat(frames, ignore_index=True).merge(pd.DataFrame(extra), on="track_id")


def summarize_mixit(per_track: pd.DataFrame) -> dict:
    """The supervised columns from the semantic mapping (the oracle one when there is no Ψ), the oracle mapping
    under sdr_oraclemap_*, and the FUSS means: si_snri (multi-source SI-SNR improvement), si_snr_single."""
    head = "semantic" if (per_track.mapping == "semantic").any() else "oracle"
    out = summarize(per_track[per_track.mapping == head])
    oracle = summarize(per_track[per_track.mapping == "oracle"])
    out.update({f"sdr_oraclemap_{k[4:]}": v for k, v in oracle.items() if k.startswith("sdr_") and not k.startswith("sdr_utt")})
    songs = per_track.drop_duplicates("track_id")
    out["si_snri"] = round(float(np.nanmean(songs.si_snri)), 3)
    out["si_snr_single"] = round(float(np.nanmean(songs.si_snr_single)), 3)
    out["active_outputs"] = round(float(songs.active_outputs.mean()), 2)
    out["mapping"] = head
    return out


def score_model(ss: StemSet, folder: Path, e: EvaluateParams, device, psi: Path | None = None) -> pd.DataFrame:
    """Per-track scores of one trained separator; memoised by model files, test stems and evaluate params."""
    models_meta = json.loads((folder / "separator.json").read_text())
    is_mixit = models_meta.get("method") == "mixit"
    test = ss.track_ids("test")
    mkey = memo.key({"model": memo.files_sha1(folder), "niter": e.niter, "device": str(device),
                     "code": memo.code_version(sepmodel, separate_evaluate),
                     "test": ss.stems[ss.stems.track_id.isin(test)].sha1.tolist(),
                     **({"psi": memo.files_sha1(psi) if psi else None,
                         "mixit_code": memo.code_version(mixit_eval, mixit_model)} if is_mixit else {})})
    if (cached := memo.lookup("evaluate", mkey)) is not None:
        return pd.read_parquet(cached / "per_track.parquet")
    if is_mixit:
        df = score_mixit(ss, folder, e, psi, device)
        with tempfile.TemporaryDirectory() as tmp:
            df.to_parquet(Path(tmp) / "per_track.parquet", index=False)
            memo.store("evaluate", mkey, tmp)
        return df
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
    psi = None
    if set_name == "cleaned" and t.method == "mixit":
        try:
            psi = mixit_classifier(t, stage_params(params, "refine", RefineParams).out)
        except FileNotFoundError as err:  # no Ψ: the oracle mapping stands in, and says so
            print(f"evaluate@{set_name}: {err}; 4-target SDR from the oracle mapping only")
    for seed in t.seeds:
        per_track = score_model(ss, Path(t.out) / set_name / f"seed{seed}", e, device, psi).assign(seed=seed)
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
    keys = [k for k, v in next(iter(summaries.values())).items() if not isinstance(v, str)]
    metrics = {}
    for k in keys:  # mean over seeds, and the seed-to-seed spread of the headline numbers
        vals = np.array([summaries[s][k] for s in t.seeds], dtype=float)
        metrics[k] = round(float(np.nanmean(vals)), 3)
        if k.startswith("sdr_") and not k.startswith("sdr_utt"):
            metrics[f"{k}_std"] = round(float(np.nanstd(vals)), 3)
    metrics["seeds"] = len(t.seeds)
    if "mapping" in per_track:
        metrics["method"] = "mixit"
        metrics["mapping"] = summaries[t.seeds[0]]["mapping"]
    with atomic_file(PER_TRACK / f"{set_name}.csv") as tmp:
        pd.concat(tables).to_csv(tmp, index=False, float_format="%.4f")
    with atomic_file(PER_TRACK / f"{set_name}.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    with atomic_file(Path("data/runs") / f"runs-{set_name}.parquet") as tmp:
        pd.DataFrame(catalogue_rows).to_parquet(tmp, index=False)
    print(f"evaluate@{set_name}: SDR avg {metrics['sdr_avg']} ± {metrics['sdr_avg_std']} dB over {len(t.seeds)} seeds "
          f"(" + ", ".join(f"{x} {metrics[f'sdr_{x}']}" for x in LABELS) + ")")
    return metrics
