"""Harm per defect family: the oracle's clean songs plus one family's songs against the oracle alone, Δ SDR.

One world (contaminate.preset `harm`: 1/8 of the training songs per kind, the rest clean) is built with the
pipeline's own stage functions (prepare → contaminate) in its own folder under .stemsift-cache/harm/. Its truth
(truth.parquet) is read here, as the oracle set reads it: this is an oracle experiment, no cleaner is involved.
Sets: `oracle` (every truly clean training song) and `oracle+<kind>` (those songs plus the songs whose only
defect is that kind). Each set trains one Open-Unmix separator per seed with the train stage's own code
(separate.jobs.fit_all, its memo key and `train.*`), each is scored on the same clean test songs with the evaluate
stage's code (separate.scoring.score_model: museval SDR per song and target), and each `oracle+<kind>` is paired
with `oracle` by song and seed: Δ of the SDR column's statistic with the seed-aware 95 % interval of
separate/paired.py (the evidence tables' statistic). Trainings and evaluations come from the memo on a rerun.

    python bench/bench_harm.py                      # 1,200 steps per target, seeds 0 1, 24 test songs
    python bench/bench_harm.py --steps 400 --seeds 0 --test-songs 8     # a quicker look
    python bench/bench_harm.py --collect-only       # re-print metrics/harm.json

Detection is joined from metrics/worlds.json (bench/bench_worlds.py): each cleaner's stem AUC per kind, mean
over the tuning worlds' draws that have that kind.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from stemsift.params import load_params

ROOT = Path(__file__).resolve().parents[1]
# kind (truth.parquet `kind`) -> the family's name in the table, in the order
FAMILIES = {"swap": "swap", "foreign": "foreign instrument", "merge": "sibling merge", "bleeding": "bleeding",
            "distortion": "distortion", "reverb": "reverb", "lowpass": "low-pass"}
DETECTORS = ("blind", "degrade")


def harm_params(base: dict, train: int, reference: int, test: int, duration: float, steps: int,
                steps_per_epoch: int, seeds: list[int], seed: int, workers: int, overrides: list[str]) -> dict:
    """The world's params: the default data at these sizes, preset harm, the evidence machinery's training length
    (epochs = steps // steps_per_epoch, patience = epochs: the whole length runs, as evidence.plan sets it)."""
    from stemsift.evidence import apply_overrides

    if steps % steps_per_epoch:
        raise SystemExit(f"--steps {steps} is not a multiple of --steps-per-epoch {steps_per_epoch}")
    epochs = steps // steps_per_epoch
    p = apply_overrides(base, ["data.source=synthetic", f"data.seed={seed}", f"data.synthetic.duration={duration}",
                               f"data.synthetic.tracks={json.dumps({'train': train, 'reference': reference, 'test': test})}",
                               "contaminate.preset=harm", f"contaminate.seed={seed}",
                               f"train.seeds={json.dumps(seeds)}", f"train.epochs={epochs}",
                               f"train.steps_per_epoch={steps_per_epoch}", f"train.patience={epochs}",
                               f"train.workers={workers}", "train.labels=given", "train.method=supervised",
                               "compute.executor=local", *overrides])
    return p


def world_key(params: dict) -> dict:
    """What the built world depends on (the data and its contamination)."""
    return {k: params.get(k) for k in ("data", "contaminate")}


def build(params: dict, folder: Path) -> None:
    """prepare → contaminate with the stage functions, in ``folder`` (skipped when built from the same params)."""
    from stemsift.stages import contaminate, prepare

    done = folder / "built.json"
    if done.is_file() and json.loads(done.read_text()) == json.loads(json.dumps(world_key(params))):
        return
    folder.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        t0 = time.perf_counter()
        prepare.run(params)
        contaminate.run(params)
        print(f"harm: world built in {time.perf_counter() - t0:.0f} s", flush=True)
    finally:
        os.chdir(cwd)
    done.write_text(json.dumps(world_key(params)))


def song_kinds(truth: pd.DataFrame) -> pd.Series:
    """track_id -> its only defect kind, 'clean' (every stem clean) or 'mixed' (several kinds: in no set)."""
    kinds = truth[truth.defect != "clean"].groupby("track_id").kind.agg(lambda k: sorted(set(k)))
    out = pd.Series("clean", index=sorted(set(truth.track_id)), dtype=object)
    for tid, ks in kinds.items():
        out[tid] = ks[0] if len(ks) == 1 else "mixed"
    return out


def training_sets(truth: pd.DataFrame) -> dict[str, list[str]]:
    """oracle: the truly clean songs (select.clean_songs, the oracle set's rule); oracle+<kind>: plus that kind's."""
    from stemsift.stages.select import clean_songs

    oracle = clean_songs(truth)
    kinds = song_kinds(truth)
    sets = {"oracle": oracle}
    for kind in FAMILIES:  # a kind with no song (e.g. left out of contaminate.label_noise.kinds) gets no set
        if (kinds == kind).any():
            sets[f"oracle+{kind}"] = sorted(oracle + list(kinds[kinds == kind].index))
    return sets


def train_key(t, cfg, device, ss, sel: pd.DataFrame, seed: int) -> str:
    """The train stage's memo key for a supervised set (stages/train.py memo_base): an identical training anywhere
    (same stems, selection, params, code, seed) is the same memo entry."""
    from stemsift import memo

    kept = sel[sel.keep].sort_values(list(sel.columns))
    songs = sorted(set(kept.track_id)) + ss.track_ids("reference")
    base = {"train": {k: v for k, v in asdict(t).items() if k not in ("seeds", "out", "device", "labels", "method",
                                                                      "mixit", "workers")},
            "method": "supervised", "mixit": None, "classifier": None, "model": asdict(cfg), "device": str(device),
            "selection": kept.astype(str).values.tolist(),
            "stems": ss.stems[ss.stems.track_id.isin(songs)].sha1.tolist(),
            "code": memo.code_key("stemsift.stages.train")}
    return memo.key({**base, "seed": seed})


def train_all(params: dict, selections: dict[str, pd.DataFrame]) -> dict[tuple[str, int], Path]:
    """(set, seed) -> trained model folder (in the memo); missing ones trained train.workers at a time, each with
    train.threads torch threads (the train stage's fit_all)."""
    from stemsift import memo
    from stemsift.params import ContaminateParams, TrainParams, stage_params
    from stemsift.separate import model as sepmodel
    from stemsift.separate.jobs import SeedJob, fit_all
    from stemsift.stages.train import train_config
    from stemsift.stemset import StemSet

    c = stage_params(params, "contaminate", ContaminateParams)
    t = stage_params(params, "train", TrainParams)
    ss = StemSet(c.out)
    cfg = sepmodel.preset(t.model, hidden_size=t.hidden_size, nb_layers=t.nb_layers, nb_channels=ss.channels)
    device = sepmodel.resolve_device(t.device)
    tc = train_config(t)
    keys, jobs = {}, []
    work = Path("runs") / f"tmp-{os.getpid()}"
    for name, sel in selections.items():
        for seed in t.seeds:
            keys[name, seed] = k = train_key(t, cfg, device, ss, sel, seed)
            if memo.lookup("train", k) is None:
                jobs.append(((name, seed), SeedJob(root=c.out, selection=sel, tracks=sorted(set(sel.track_id)),
                                                   cfg=cfg, tc=tc, seed=seed, device=str(device),
                                                   folder=str(work / name.replace("+", "_") / f"seed{seed}"),
                                                   valid_segments=t.valid_segments)))
    if jobs:
        print(f"harm: {len(jobs)} trainings ({tc.epochs * tc.steps_per_epoch} steps per target), "
              f"{t.workers} at a time, {t.threads} thread(s) each", flush=True)
        t0 = time.perf_counter()
        fit_all([j for _, j in jobs], t.workers, t.threads)
        for (name, seed), job in jobs:
            memo.store("train", keys[name, seed], job.folder)
        shutil.rmtree(work, ignore_errors=True)
        print(f"harm: trained in {time.perf_counter() - t0:.0f} s", flush=True)
    return {ns: memo.lookup("train", k) for ns, k in keys.items()}


def evaluate_all(params: dict, models: dict[tuple[str, int], Path]) -> dict[str, pd.DataFrame]:
    """set -> per (seed, song, target) museval table, as the evaluate stage writes it (seed, song_sha1 added)."""
    from stemsift import memo
    from stemsift.params import ContaminateParams, EvaluateParams, TrainParams, stage_params
    from stemsift.separate import model as sepmodel
    from stemsift.separate.evaluate import museval_pool
    from stemsift.separate.scoring import score_model
    from stemsift.stemset import StemSet

    ss = StemSet(stage_params(params, "contaminate", ContaminateParams).out)
    e = stage_params(params, "evaluate", EvaluateParams)
    device = sepmodel.resolve_device(stage_params(params, "train", TrainParams).device)
    code = memo.code_key("stemsift.stages.evaluate")  # the stage's own key: its memo entries are shared
    song_sha1 = ss.stems.sort_values("label").groupby("track_id").sha1.agg(lambda h: memo.key(list(h))[:16])
    pool = museval_pool(e.workers) if e.workers > 1 else None
    tables: dict[str, list[pd.DataFrame]] = {}
    try:
        for (name, seed), folder in models.items():
            df = score_model(ss, folder, e.niter, e.workers, device, code, None, pool).assign(seed=seed)
            df["song_sha1"] = df.track_id.map(song_sha1)
            tables.setdefault(name, []).append(df)
    finally:
        if pool is not None:
            pool.shutdown()
    return {name: pd.concat(dfs, ignore_index=True) for name, dfs in tables.items()}


def verdict(ci: list[float]) -> str:
    """harm: the interval lies below 0; helps: above; noise: it holds 0."""
    return "harm" if ci[1] < 0 else "helps" if ci[0] > 0 else "noise"


def harm_rows(tables: dict[str, pd.DataFrame], sets: dict[str, list[str]], resamples: int) -> list[dict]:
    """One row per family: Δ of the SDR column's statistic (median over songs per target, mean of targets, mean
    over seeds) against the oracle with its seed-aware interval, and the mean per-song Δ (evidence.set_row's two)."""
    from stemsift.evidence import seed_means
    from stemsift.separate.paired import paired_delta

    base = tables["oracle"]
    rows = []
    for kind, family in FAMILIES.items():
        name = f"oracle+{kind}"
        if name not in tables:
            rows.append({"family": family, "kind": kind, "set": name, "songs_added": 0, "delta_db": None,
                         "ci95": [None, None], "verdict": "no songs"})
            continue
        table = tables[name]
        d = paired_delta(table, base, resamples)
        m = paired_delta(table, base, resamples, stat="mean")
        s = seed_means(table)
        rows.append({"family": family, "kind": kind, "set": name, "songs_added": len(sets[name]) - len(sets["oracle"]),
                     "sdr": round(float(s.mean()), 3), "delta_db": d["delta_db"], "ci95": d["ci95"],
                     "ci_over": d["ci_over"], "delta_mean_db": m["delta_db"], "delta_mean_ci95": m["ci95"],
                     "pairs": d["pairs"], "unpaired": d["unpaired"], "seeds": d["seeds"], "songs": d["songs"],
                     "verdict": verdict(d["ci95"])})
    return rows


def detection(path: Path) -> dict:
    """kind -> cleaner -> {stem_auc: mean over the tuning worlds' draws, draws: how many} from bench_worlds' json."""
    if not path.is_file():
        return {}
    d = json.loads(path.read_text())
    rows = pd.DataFrame(d.get("rows") or [])
    if rows.empty or "variant" not in rows:
        return {}
    rows = rows[rows.world != d.get("held_out")] if "world" in rows else rows
    out: dict = {}
    for kind in FAMILIES:
        col = f"stem_auc_{kind}"
        for cleaner in DETECTORS:
            v = pd.to_numeric(rows.loc[rows.variant == cleaner, col], errors="coerce").dropna() if col in rows else []
            if len(v):
                out.setdefault(kind, {})[cleaner] = {"stem_auc": round(float(v.mean()), 3), "draws": int(len(v))}
    return out


def markdown(summary: dict) -> str:
    fmt = lambda x, p="+.2f": "—" if x is None else format(x, p)  # noqa: E731
    det = summary.get("detection") or {}
    head = ("| family | songs added | Δ SDR dB vs oracle [95% CI] | verdict | "
            + " | ".join(f"`{c}` stem AUC" for c in DETECTORS) + " |")
    lines = [head, "|---|---|---|---|" + "---|" * len(DETECTORS)]
    for r in summary["families"]:
        auc = [det.get(r["kind"], {}).get(c) for c in DETECTORS]
        d = "—" if r["delta_db"] is None else f"{fmt(r['delta_db'])} [{fmt(r['ci95'][0])}, {fmt(r['ci95'][1])}]"
        lines.append(f"| {r['family']} | {r['songs_added']} | {d} | {r['verdict']} | "
                     + " | ".join("—" if a is None else f"{a['stem_auc']:.3f} ({a['draws']})" for a in auc) + " |")
    o = summary["oracle"]
    lines.append(f"\noracle: {o['songs']} clean songs, SDR {o['sdr']:.2f} dB; {summary['steps_per_target']} steps per "
                 f"target, seeds {summary['seeds']}, {summary['test_songs']} test songs; Δ: median over songs per target, "
                 "mean of targets and seeds, interval over seeds and songs (separate/paired.py). Stem AUC: mean over "
                 "the tuning worlds' draws (count) in metrics/worlds.json.")
    return "\n".join(lines)


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def run(params: dict, folder: Path, out: Path, worlds_json: Path) -> dict:
    from stemsift.catalogue import TRUTH
    from stemsift.separate.selection import given_selection
    from stemsift.stemset import StemSet

    build(params, folder)
    cwd = os.getcwd()
    os.chdir(folder)  # every relative path of the params (and the memo, unless STEMSIFT_CACHE says) is the world's
    try:
        truth = pd.read_parquet(Path(params["contaminate"]["out"]) / TRUTH)
        ss = StemSet(params["contaminate"]["out"])
        sets = training_sets(truth)
        selections = {name: given_selection(ss.stems, songs) for name, songs in sets.items()}
        Path("selections").mkdir(exist_ok=True)
        for name, sel in selections.items():  # what each set trained on (the test reads them back)
            sel.to_parquet(Path("selections") / f"{name}.parquet", index=False)
        models = train_all(params, selections)
        t0 = time.perf_counter()
        tables = evaluate_all(params, models)
        print(f"harm: evaluated in {time.perf_counter() - t0:.0f} s", flush=True)
        for name, table in tables.items():
            table.to_csv(Path("selections") / f"{name}.eval.csv", index=False, float_format="%.4f")
    finally:
        os.chdir(cwd)
    from stemsift.evidence import seed_means

    resamples = int((params.get("evidence") or {}).get("resamples", 1000))
    t = params["train"]
    summary = {"world": str(folder), "preset": "harm", "train_songs": int(params["data"]["synthetic"]["tracks"]["train"]),
               "test_songs": int(params["data"]["synthetic"]["tracks"]["test"]),
               "duration": float(params["data"]["synthetic"]["duration"]),
               "steps_per_target": int(t["epochs"]) * int(t["steps_per_epoch"]), "seeds": list(t["seeds"]),
               "resamples": resamples,
               "oracle": {"songs": len(sets["oracle"]), "sdr": round(float(seed_means(tables["oracle"]).mean()), 3)},
               "families": harm_rows(tables, sets, resamples), "detection": detection(worlds_json),
               "sets": sets}
    write_atomic(out, json.dumps(summary, indent=1) + "\n")
    write_atomic(out.with_suffix(".md"), markdown(summary) + "\n")
    return summary


def main(argv: list[str] | None = None) -> dict:
    base = load_params(ROOT / "params.yaml")
    tracks = base["data"]["synthetic"]["tracks"]
    cpu = base["evidence"]["scales"]["cpu"]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=int(cpu["steps_per_target"]), help="training steps per target")
    ap.add_argument("--steps-per-epoch", type=int, default=int(cpu["steps_per_epoch"]))
    ap.add_argument("--seeds", type=int, nargs="+", default=list(cpu["seeds"]))
    ap.add_argument("--train-songs", type=int, default=int(tracks["train"]), help="1/8 of them per kind")
    ap.add_argument("--reference-songs", type=int, default=int(tracks["reference"]))
    ap.add_argument("--test-songs", type=int, default=int(cpu["test_songs"]))
    ap.add_argument("--duration", type=float, default=float(base["data"]["synthetic"]["duration"]))
    ap.add_argument("--seed", type=int, default=int(base["data"]["seed"]), help="data and contamination seed")
    ap.add_argument("--workers", type=int, default=int(base["train"]["workers"]),
                    help="trainings at once (train.threads torch threads each)")
    ap.add_argument("-S", "--set", dest="overrides", action="append", default=[],
                    help="a params override key=value (as dvc exp run -S), e.g. evaluate.workers=1")
    ap.add_argument("--cache", default=str(ROOT / ".stemsift-cache" / "harm"))
    ap.add_argument("--json", default=str(ROOT / "metrics" / "harm.json"))
    ap.add_argument("--worlds-json", default=str(ROOT / "metrics" / "worlds.json"),
                    help="bench_worlds' results: the detection columns")
    ap.add_argument("--collect-only", action="store_true", help="print the table of --json again")
    ap.add_argument("--rejoin", action="store_true",
                    help="re-join the detection columns of --json from --worlds-json (after a new make worlds), no training")
    a = ap.parse_args(argv)
    out = Path(a.json)
    if a.collect_only or a.rejoin:
        summary = json.loads(out.read_text())
        if a.rejoin:
            summary["detection"] = detection(Path(a.worlds_json))
            write_atomic(out, json.dumps(summary, indent=1) + "\n")
            write_atomic(out.with_suffix(".md"), markdown(summary) + "\n")
    else:
        params = harm_params(base, a.train_songs, a.reference_songs, a.test_songs, a.duration, a.steps,
                             a.steps_per_epoch, a.seeds, a.seed, a.workers, a.overrides)
        from stemsift import memo

        folder = Path(a.cache) / f"world-{memo.key(world_key(params))[:10]}"
        summary = run(params, folder, out, Path(a.worlds_json))
    print(markdown(summary))
    return summary


if __name__ == "__main__":
    sys.exit(main() and None)
