"""Stage `score`: every cleaner in score.cleaners scores every training stem (higher = keep) from a truth-free
view of the stem set; scores -> data/scores/scores-<cleaner>.parquet (catalogue table `scores`), detection
quality against the simulated truth (when there is one) -> metrics/cleaning.json."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from stemsift.catalogue import TRUTH
from stemsift.clean import REGISTRY, CleanerError, StemView, get_cleaner
from stemsift.clean.metrics import detection
from stemsift.embed.cache import EmbeddingStore
from stemsift.compute import executor_from_params, shutdown
from stemsift.params import (ComputeParams, ContaminateParams, EmbedParams, RefineParams, ScoreParams, TrainParams, params_hash,
                             stage_params)
from stemsift.stemset import StemSet, atomic_dir, atomic_file

METRICS = Path("metrics/cleaning.json")


def cleaner_options(params: dict, name: str) -> dict:
    """A cleaner's own params block (``cleaners.<name>``), empty when absent."""
    return dict((params.get("cleaners") or {}).get(name) or {})


def scoring_order(params: dict, names: list[str], seed: int) -> list[str]:
    """``names`` with every fusion cleaner's components scored before it (added when not listed)."""
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in path:
            raise CleanerError(f"cleaners.{name}.components: a cycle ({' -> '.join(path + (name,))})")
        for comp in get_cleaner(name, cleaner_options(params, name), seed).components():
            visit(comp, path + (name,))
        order.append(name)

    for n in names:
        visit(n, ())
    return order


def only_stage_outputs(params: dict, names: list[str]) -> None:
    """The files a cleaner reads besides the view are the uncleaned baseline's models (<train.out>/baseline) and
    the refine stage's folder (refine.out), nothing else: models/oracle was trained on the truth."""
    baseline = Path(stage_params(params, "train", TrainParams).out, "baseline")
    refined = Path(stage_params(params, "refine", RefineParams).out)
    for name in names:
        opts = {**REGISTRY[name].defaults, **cleaner_options(params, name)}
        if "baseline" in REGISTRY[name].needs and baseline.resolve() not in (p := Path(opts["model"]).resolve(), p.parent):
            raise CleanerError(f"cleaners.{name}.model: {opts['model']} is not the baseline's models ({baseline})")
        if "refined" in REGISTRY[name].needs and Path(opts["folder"]).resolve() != refined.resolve():
            raise CleanerError(f"cleaners.{name}.folder: {opts['folder']} is not the refine stage's output ({refined})")


def score_all(ss: StemSet, params: dict, names: list[str], embeddings: str | Path | None) -> tuple[dict, dict]:
    """Scores per cleaner, and the attribution result of cleaners that keep one (unlearning)."""
    s = stage_params(params, "score", ScoreParams)
    store = EmbeddingStore(embeddings) if embeddings is not None else None
    view = StemView.of(ss, store)
    view.executor = executor_from_params(stage_params(params, "compute", ComputeParams))  # where per-song work runs
    out, results = {}, {}
    for name in scoring_order(params, names, s.seed):
        cleaner = get_cleaner(name, cleaner_options(params, name), seed=s.seed)
        t0 = time.perf_counter()
        table = cleaner.score(view)
        view.scores[name] = table
        config = {**cleaner.config(), "embedder": store.info["config"] if store and "embeddings" in cleaner.needs else None}
        out[name] = table.assign(cleaner=name, config_hash=params_hash(config), seconds=round(time.perf_counter() - t0, 2))
        if getattr(cleaner, "result", None) is not None:  # attribution cleaners keep their full matrix
            results[name] = cleaner.result
    return out, results


def unlearning_cost(result, train_out: str) -> dict:
    """Fisher / unlearning / attribution wall time next to one baseline training (Blind'25: 3 h vs 19 h)."""
    cost = {f"{k}_seconds": round(float(v), 2) for k, v in result.seconds.items()}
    runs = sorted(Path(train_out, "baseline").glob("seed*/separator.json"))
    if runs:
        train = float(json.loads(runs[0].read_text())["seconds"])
        cost["baseline_train_seconds"] = round(train, 2)
        cost["ratio_to_training"] = round(float(result.seconds.get("total", 0.0)) / train, 4) if train else None
    return cost


def run(params: dict) -> dict[str, pd.DataFrame]:
    c = stage_params(params, "contaminate", ContaminateParams)
    e = stage_params(params, "embed", EmbedParams)
    s = stage_params(params, "score", ScoreParams)
    names = [n for n in dict.fromkeys(s.cleaners) if n != "none"]
    ss = StemSet(c.out)
    if unknown := [n for n in names if n not in REGISTRY]:
        raise CleanerError(f"score.cleaners: unknown cleaner {unknown[0]!r} (available: {', '.join(sorted(REGISTRY))})")
    only_stage_outputs(params, scoring_order(params, names, s.seed))
    needs_embeddings = any("embeddings" in REGISTRY[n].needs for n in scoring_order(params, names, s.seed))
    try:
        tables, results = score_all(ss, params, names, e.folder if needs_embeddings else None)
    finally:
        shutdown()  # a Ray connection, when compute.executor is ray
    with atomic_dir(s.out) as tmp:
        for name, table in tables.items():
            table.drop(columns="seconds").to_parquet(tmp / f"scores-{name}.parquet", index=False)
            if (res := results.get(name)) is not None:
                res.table().assign(cleaner=name, config_hash=table.config_hash.iloc[0], mode=res.config["mode"]).to_parquet(
                    tmp / f"attribution-{name}.parquet", index=False)
    truth_path = Path(c.out) / TRUTH
    metrics: dict = {}
    for name, table in tables.items():
        metrics[name] = {"seconds": float(table.seconds.iloc[0])}
        if comps := get_cleaner(name, cleaner_options(params, name), s.seed).components():
            metrics[name]["components"] = comps  # their seconds count toward this cleaner's cost
        if (res := results.get(name)) is not None:
            metrics[name]["cost"] = unlearning_cost(res, stage_params(params, "train", TrainParams).out)
        if truth_path.is_file():  # the truth is read only here, after every cleaner has scored
            metrics[name].update(detection(table, pd.read_parquet(truth_path), list(s.report_ratios)))
    with atomic_file(METRICS) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"{'cleaner':10s} {'song AUC':>8s} {'stem AUC':>8s}  seconds")
    for name, m in metrics.items():
        print(f"{name:10s} {m.get('song_auc', {}).get('all') or float('nan'):8.3f} "
              f"{m.get('stem_auc', {}).get('all') or float('nan'):8.3f}  {m['seconds']:.1f}")
    return tables
