"""Stage `train@<set>`: one Open-Unmix separator per seed on a training set's selection; one MLflow run each."""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, fields, replace
from pathlib import Path

import pandas as pd

from stemsift import memo
from stemsift import LABELS
from stemsift.classify import model as clsmodel
from stemsift.classify.model import probability_fn
from stemsift.params import (TRAIN_SETS, ContaminateParams, FilterParams, MixITParams, RefineParams, SelectParams,
                             TrainParams, params_hash, stage_params)
from stemsift.separate.mixit import MixITConfig
from stemsift.separate.mixit_model import save_mixit
from stemsift.separate.mixit_train import train_mixit
from stemsift.separate import model as sepmodel
from stemsift.separate.data import StemPool, fixed_segments
from stemsift.separate.selection import check_drawable, refined_selection, summary, typed
from stemsift.separate.train import TrainConfig, train_separator
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
    seq_len = int(round(tc.seq_dur * cfg.sample_rate))
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
    memo_base = {"train": {k: v for k, v in asdict(t).items() if k not in ("seeds", "out", "device", "labels", "method", "mixit")},
                 "method": method, "mixit": asdict(t.mixit) if method == "mixit" else None,
                 "classifier": memo.files_sha1(psi) if psi else None,
                 "model": asdict(cfg), "device": str(device), "selection": kept.astype(str).values.tolist(),
                 "stems": ss.stems[ss.stems.track_id.isin(songs)].sha1.tolist(),
                 "code": memo.code_key(__name__)}  # this stage + every stemsift module it imports
    pool = valid = None
    report: dict = {"songs": summary(sel)["songs"], "seeds": len(t.seeds)}
    runs = {}
    with atomic_dir(Path(t.out) / set_name) as tmp:
        for seed in t.seeds:
            folder, mkey = tmp / f"seed{seed}", memo.key({**memo_base, "seed": seed})
            with TrainingRun(f"{set_name}-seed{seed}", params=plain, tags={**tags, "seed": seed}) as run:
                if (cached := memo.lookup("train", mkey)) is not None:  # same stems, params, seed: same model
                    shutil.copytree(cached, folder)
                    run.mlflow.set_tag("reused_identical_training", "true")
                else:
                    if pool is None:
                        pool = StemPool(ss, sorted(set(kept.track_id)), cfg.sample_rate, cfg.nb_channels)
                        valid = fixed_segments(ss, ss.track_ids("reference"), cfg.sample_rate, seq_len,
                                               t.valid_segments, cfg.nb_channels)
                    if method == "mixit":  # song mixtures only: the stems and their labels are never used
                        # one network for all targets: as many gradient steps as the four supervised models together
                        mtc = replace(tc, steps_per_epoch=tc.steps_per_epoch * len(LABELS))
                        res = train_mixit(pool, sorted(set(kept.track_id)), valid[LABELS[0]][0], cfg, mtc,
                                          mixit_config(t.mixit), seed, device,
                                          classifier=probability_fn(clsmodel.load(psi, str(device)), cfg.sample_rate) if psi else None)
                        save_mixit(res.model, cfg, t.mixit.outputs, folder, {
                            "seed": seed, "best_epoch": {"mixit": res.best_epoch}, "best_valid": {"mixit": res.best_valid},
                            "history": res.history, "steps": res.steps, "seconds": round(res.seconds, 2)})
                    else:
                        res = train_separator(pool, sel, valid, cfg, tc, seed, device)
                        sepmodel.save(res.models, cfg, folder, {
                            "seed": seed, "best_epoch": res.best_epoch, "best_valid": res.best_valid,
                            "history": res.history, "steps": res.steps, "seconds": round(res.seconds, 2)})
                    memo.store("train", mkey, folder)
                meta = json.loads((folder / "separator.json").read_text())
                for row in meta["history"]:
                    run.log_epoch(row["epoch"], **{k: v for k, v in row.items() if k != "epoch"})
                valid_loss = sum(meta["best_valid"].values()) / len(meta["best_valid"])
                run.log_metrics({"best_valid_loss": valid_loss, "train_seconds": meta["seconds"],
                                 "train_steps": meta["steps"]})
                run.log_model_dir(folder)
                runs[str(seed)] = {"mlflow_run_id": run.run_id, "seconds": meta["seconds"], "steps": meta["steps"],
                                   "epochs": len(meta["history"]), "reused": cached is not None, **tags}
            report[f"valid_loss_seed{seed}"] = round(valid_loss, 5)
            how = "reused an identical training" if cached is not None else f"{meta['steps']} steps in {meta['seconds']:.0f} s"
            print(f"train@{set_name} seed {seed}: {how}, best valid loss {valid_loss:.5f} (epochs {meta['best_epoch']})")
    report["seconds_per_run"] = round(sum(r["seconds"] for r in runs.values()) / len(runs), 1)
    with atomic_file(runs_file(set_name)) as tmp:
        tmp.write_text(json.dumps(runs, indent=2, sort_keys=True) + "\n")
    with atomic_file(Path("metrics/train") / f"{set_name}.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    return report
