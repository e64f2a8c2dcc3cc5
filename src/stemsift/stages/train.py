"""Stage `train@<set>`: one Open-Unmix separator per seed on a training set's selection; one MLflow run each."""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, fields
from pathlib import Path

import pandas as pd

from stemsift import memo
from stemsift.params import (TRAIN_SETS, ContaminateParams, FilterParams, MixITParams, RefineParams, SelectParams,
                             TrainParams, params_hash, stage_params)
from stemsift.separate.mixit import MixITConfig
from stemsift.separate import model as sepmodel
from stemsift.separate.jobs import SeedJob, fit_all
from stemsift.separate.selection import check_drawable, refined_selection, summary, typed
from stemsift.separate.train import TrainConfig
from stemsift.stemset import StemSet, atomic_dir, atomic_file
from stemsift.classify.refine import classifier_for, read_final_sets
from stemsift.tracking import TrainingRun, dvc_out_hash, runs_file


def train_config(t: TrainParams) -> TrainConfig:
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in asdict(t).items() if k in names})


def mixit_config(m: MixITParams) -> MixITConfig:
    return MixITConfig(assignment=m.assignment, num_outputs=m.outputs, snr_max=m.snr_max, sparsity_weight=m.sparsity,
                       covariance_weight=m.covariance, semantic_weight=m.semantic, consistency=m.consistency)


def run(params: dict, set_name: str) -> dict:
    if set_name not in TRAIN_SETS:
        raise ValueError(f"unknown training set {set_name!r} (use {', '.join(TRAIN_SETS)})")
    c = stage_params(params, "contaminate", ContaminateParams)
    t = stage_params(params, "train", TrainParams)
    refine_out = stage_params(params, "refine", RefineParams).out
    if set_name == "cleaned":  # cleaned trains from the filtered stem set and its selection
        root = stage_params(params, "filter", FilterParams).out
        sel_path = Path(root) / "selections.parquet"
    elif set_name == "refined":  # all training songs under the refined-label rule (refine stage)
        root, sel_path = c.out, Path(refine_out) / "selections.parquet"
    else:
        root, sel_path = c.out, Path(stage_params(params, "select", SelectParams).out) / f"{set_name}.parquet"
    sel = typed(pd.read_parquet(sel_path))
    if set_name == "cleaned" and t.labels == "refined":  # the filter's songs, drawn by their refined labels
        sel = refined_selection(sel, read_final_sets(refine_out))
    check_drawable(sel)
    ss = StemSet(root)
    cfg = sepmodel.preset(t.model, hidden_size=t.hidden_size, nb_layers=t.nb_layers, nb_channels=ss.channels)
    device = sepmodel.resolve_device(t.device)
    tc = train_config(t)
    plain = {k: v for k, v in params.items() if not k.startswith("_")}
    labels = "refined" if set_name == "refined" or (set_name == "cleaned" and t.labels == "refined") else "given"
    tags = {"train_set": set_name, "labels": labels, "stemset": root, "stemset_hash": dvc_out_hash(root) or "unknown",
            "selection_hash": dvc_out_hash(str(sel_path.parent)) or "unknown", "params_hash": params_hash(plain)}
    kept = sel[sel.keep].sort_values(list(sel.columns))
    songs = sorted(set(kept.track_id)) + ss.track_ids("reference")
    method = t.method if set_name == "cleaned" else "supervised"  # the controls stay supervised
    tags["method"] = method
    psi = classifier_for(t.mixit.classifier, refine_out) if method == "mixit" and t.mixit.semantic > 0 else None
    # labels and method enter the key only through what they change (selection, method's own block)
    memo_base = {"train": {k: v for k, v in asdict(t).items() if k not in ("seeds", "out", "device", "labels", "method", "mixit",
                                                                            "workers")},
                 "method": method, "mixit": asdict(t.mixit) if method == "mixit" else None,
                 "classifier": memo.files_sha1(psi) if psi else None,
                 "model": asdict(cfg), "device": str(device), "selection": kept.astype(str).values.tolist(),
                 "stems": ss.stems[ss.stems.track_id.isin(songs)].sha1.tolist(),
                 "code": memo.code_key(__name__)}  # this stage + every stemsift module it imports
    report: dict = {"songs": summary(sel)["songs"], "seeds": len(t.seeds)}
    runs, keys, jobs = {}, {}, {}
    with atomic_dir(Path(t.out) / set_name) as tmp:
        for seed in t.seeds:  # identical trainings come from the memo; the rest train t.workers at a time
            folder, keys[seed] = tmp / f"seed{seed}", memo.key({**memo_base, "seed": seed})
            if (cached := memo.lookup("train", keys[seed])) is not None:  # same stems, params, seed: same model
                shutil.copytree(cached, folder)
            else:
                jobs[seed] = SeedJob(root=root, selection=sel, tracks=sorted(set(kept.track_id)), cfg=cfg, tc=tc,
                                     seed=seed, device=str(device), folder=str(folder), valid_segments=t.valid_segments,
                                     method=method, mixit=mixit_config(t.mixit) if method == "mixit" else None,
                                     psi=str(psi) if psi else None)
        fit_all(list(jobs.values()), t.workers, t.threads)
        for seed in t.seeds:
            folder = tmp / f"seed{seed}"
            if seed in jobs:
                memo.store("train", keys[seed], folder)
            with TrainingRun(f"{set_name}-seed{seed}", params=plain, tags={**tags, "seed": seed}) as run:
                if seed not in jobs:
                    run.mlflow.set_tag("reused_identical_training", "true")
                meta = json.loads((folder / "separator.json").read_text())
                for row in meta["history"]:
                    run.log_epoch(row["epoch"], **{k: v for k, v in row.items() if k != "epoch"})
                valid_loss = sum(meta["best_valid"].values()) / len(meta["best_valid"])
                run.log_metrics({"best_valid_loss": valid_loss, "train_seconds": meta["seconds"],
                                 "train_steps": meta["steps"]})
                run.log_model_dir(folder)
                runs[str(seed)] = {"mlflow_run_id": run.run_id, "seconds": meta["seconds"], "steps": meta["steps"],
                                   "epochs": len(meta["history"]), "reused": seed not in jobs, **tags}
            report[f"valid_loss_seed{seed}"] = round(valid_loss, 5)
            how = "reused an identical training" if seed not in jobs else f"{meta['steps']} steps in {meta['seconds']:.0f} s"
            print(f"train@{set_name} seed {seed}: {how}, best valid loss {valid_loss:.5f} (epochs {meta['best_epoch']})")
    report["seconds_per_run"] = round(sum(r["seconds"] for r in runs.values()) / len(runs), 1)
    with atomic_file(runs_file(set_name)) as tmp:
        tmp.write_text(json.dumps(runs, indent=2, sort_keys=True) + "\n")
    with atomic_file(Path("metrics/train") / f"{set_name}.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    return report
