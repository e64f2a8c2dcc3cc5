"""Stage `refine`: self-refining pseudo labels (Koo et al., ISMIR 2023). Ψ_0 learns the given labels by random
mixing and relabels every training stem; Ψ_k learns those labels, relabels. Outputs (data/refined): every
iteration's probabilities and refined sets (catalogue `refined_labels`, `labels` kind=refined), the `refined`
training set's selection, the classifiers. Then, and only then, the truth is read for metrics/classifier.json:
recognition on the clean test split for each Ψ_k and for Ψ trained on true labels; refinement quality."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from stemsift import LABELS
from stemsift.catalogue import TRUTH
from stemsift.classify import model as clsmodel
from stemsift.classify.metrics import recognition, refinement_quality
from stemsift.classify.refine import REFINED, final_sets, self_refine, subset_examples
from stemsift.classify.train import ClassifierTrainConfig, predict_signals, train_classifier
from stemsift.params import ContaminateParams, RefineParams, stage_params
from stemsift.separate.data import StemPool
from stemsift.separate.model import resolve_device
from stemsift.separate.selection import catalogue_rows, given_selection, refined_selection, summary
from stemsift.stemset import StemSet, atomic_dir, atomic_file

METRICS = Path("metrics/classifier.json")


def iteration_name(k: int) -> str:
    """dvc exp show column names: Ψ_0 learned the noisy given labels, Ψ_k the labels of round k."""
    return "noisy" if k == 0 else f"iter{k}"


def train_config(r: RefineParams) -> ClassifierTrainConfig:
    return ClassifierTrainConfig(steps=r.steps, batch_size=r.batch_size, lr=r.lr, weight_decay=r.weight_decay,
                                 include_prob=r.include_prob, effects_prob=r.effects_prob)


def label_rows(its) -> pd.DataFrame:
    rows = []
    for it in its:
        for i, (tid, label) in enumerate(it.keys):
            rows.append({"track_id": tid, "label": label, "iteration": it.index,
                         **{f"p_{c}": float(it.probs[i, j]) for j, c in enumerate(LABELS)},
                         "refined": sorted(it.refined[(tid, label)]),
                         **{f"threshold_{c}": float(it.thresholds[j]) for j, c in enumerate(LABELS)}})
    return pd.DataFrame(rows)


def run(params: dict) -> dict:
    c = stage_params(params, "contaminate", ContaminateParams)
    r = stage_params(params, "refine", RefineParams)
    ss = StemSet(c.out)
    cfg = clsmodel.preset(r.classifier, depths=r.depths, dims=r.dims)
    device = resolve_device(r.device, "refine.device")
    tc = train_config(r)
    t0 = time.perf_counter()
    train_ids, ref_ids, test_ids = ss.track_ids("train"), ss.track_ids("reference"), ss.track_ids("test")
    pool = StemPool(ss, train_ids, cfg.sample_rate, 1)
    ref_pool = StemPool(ss, ref_ids, cfg.sample_rate, 1)
    stems = ss.stems[ss.stems.split == "train"]
    given = {(t, lb): frozenset({lb}) for t, lb in zip(stems.track_id, stems.label)}

    def log(it):
        counts = pd.Series([len(s) for s in it.refined.values()]).value_counts().sort_index()
        print(f"refine: Ψ_{it.index} ({iteration_name(it.index)}) {it.seconds:.0f} s, thresholds "
              f"{np.round(it.thresholds, 2).tolist()}, stems by refined-set size {counts.to_dict()}")

    its = self_refine(pool, given, ref_pool, ref_ids, cfg, tc, r.iterations, str(r.threshold), r.seed, device,
                      on_iteration=log)
    table = label_rows(its)
    sel = refined_selection(given_selection(ss.stems, train_ids), final_sets(table))
    seconds = time.perf_counter() - t0
    with atomic_dir(r.out) as tmp:
        table.to_parquet(tmp / REFINED, index=False)
        labels = table[["track_id", "label", "iteration"]].assign(stemset="contaminated", kind="refined",
                                                                 instruments=table.refined)
        labels.assign(iteration=labels.iteration + 1).to_parquet(tmp / "labels-refined.parquet", index=False)
        catalogue_rows(sel, "refined", "selfrefine", "", 1.0, f"refined@{r.threshold}").to_parquet(
            tmp / "selections.parquet", index=False)
        for it in its:
            clsmodel.save(it.model, tmp / f"psi{it.index}", {"iteration": it.index, "threshold": str(r.threshold),
                                                             "thresholds": it.thresholds.tolist()})
    metrics = {"seconds": round(seconds, 1), "threshold": str(r.threshold), "selection": summary(sel)}
    metrics.update(classifier_metrics(ss, its, pool, cfg, tc, r, device, test_ids, given, c.out))
    with atomic_file(METRICS) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    print_table(metrics)
    return metrics


def classifier_metrics(ss, its, pool, cfg, tc, r: RefineParams, device, test_ids, given, root) -> dict:
    """Recognition on the clean test split (single stems and every sub-mixture of each song) for each Ψ_k and the
    clean-label Ψ; refinement quality against the truth. Runs after the outputs are written: nothing above read it."""
    out: dict = {}
    if not test_ids:
        return out
    test_pool = StemPool(ss, test_ids, cfg.sample_rate, 1)
    signals, targets, kinds = subset_examples(test_pool, test_ids)
    kinds = np.array(kinds)
    models = {iteration_name(it.index): (it.model, it.thresholds) for it in its}
    truth_path = Path(root) / TRUTH
    truth = pd.read_parquet(truth_path) if truth_path.is_file() else None
    if truth is not None and r.clean_oracle:
        # the clean-trained Ψ learns only the truly clean stems (their labels are right): true label sets of
        # bled stems list every leaking instrument, however quiet, and would teach Ψ to hear them everywhere
        ok = truth[truth.defect == "clean"]
        clean_labels = {(t, lb): frozenset({lb}) for t, lb in zip(ok.track_id, ok.label)}
        t0 = time.perf_counter()
        clean = train_classifier(pool, clean_labels, cfg, tc, seed=r.seed, device=device).model
        models["clean"] = (clean, its[0].thresholds if str(r.threshold) != "adaptive" else its[-1].thresholds)
        out["clean_seconds"] = round(time.perf_counter() - t0, 1)
    for name, (model, th) in models.items():
        probs = predict_signals(model, signals, device=device)
        out[name] = {"all": recognition(probs, targets, th),
                     "single": recognition(probs[kinds == "single"], targets[kinds == "single"], th),
                     "mixture": recognition(probs[kinds == "mixture"], targets[kinds == "mixture"], th)}
    if truth is not None:
        true = {(t, lb): frozenset(v) for t, lb, v in zip(truth.track_id, truth.label, truth.true_instruments)}
        kind = {(t, lb): (k or d) for t, lb, k, d in zip(truth.track_id, truth.label, truth.kind, truth.defect)}
        out["refinement"] = {iteration_name(it.index): refinement_quality(given, it.refined, true, kind) for it in its}
    return out


def print_table(m: dict) -> None:
    names = [n for n in m if isinstance(m[n], dict) and "all" in m[n]]
    print(f"{'classifier':10s} {'exact all':>9s} {'single':>7s} {'mixture':>7s} {'F1 macro':>8s}")
    for n in names:
        a = m[n]
        print(f"{n:10s} {a['all']['exact_match']:9.2f} {a['single']['exact_match']:7.2f} "
              f"{a['mixture']['exact_match']:7.2f} {a['all']['f1_macro']:8.2f}")
    for n, q in m.get("refinement", {}).items():
        print(f"labels of Ψ {n}: wrong fixed {q['wrong_fixed']}%, right broken {q['right_broken']}%, "
              f"exact {q['exact_before']}% -> {q['exact_after']}%")
