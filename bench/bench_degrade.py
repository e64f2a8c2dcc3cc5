"""`degrade` leave-one-effect-out: stem AUC per `effects` type when the detector saw it, saw only its relatives
(near held-out: the preset's pedalboard class removed from training) or nothing of its family (strict held-out).

A small world is built once with the pipeline's own stage functions (prepare -> contaminate, preset `effects`) in
--world (kept between runs); each configuration's scores are cached there, keyed by its options and the detector's
code, so the bench can run in parts (each well under the shared-CPU time slot):

    python bench/bench_degrade.py --configs seen near:reverb      # some configurations
    python bench/bench_degrade.py --json                          # the rest, then the table -> metrics/bench/degrade.json
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import time
from pathlib import Path

import pandas as pd

from stemsift.catalogue import TRUTH
from stemsift.clean import StemView, get_cleaner
from stemsift.clean.metrics import detection
from stemsift.params import load_params
from stemsift.stemset import StemSet

ROOT = Path(__file__).resolve().parents[1]
# effect of the preset -> (near held-out: its pedalboard class, strict held-out: its processing family)
HELD_OUT = {"distortion": ("pedalboard_distortion", "saturation"), "reverb": ("pedalboard_reverb", "reverb"),
            "lowpass": ("pedalboard_lowpass", "filter")}
CONFIGS = {"seen": [], **{f"near:{e}": [m] for e, (m, _) in HELD_OUT.items()},
           **{f"strict:{e}": [f] for e, (_, f) in HELD_OUT.items()}}
# stricter still: the family's nearest relatives elsewhere out too (echoes for reverb, resampling's brick-wall low-pass)
EXTRA = {"strictest:reverb": ["reverb", "echo"], "strictest:lowpass": ["filter", "resample"]}
PROTOTYPE = {"reverb": (0.824, 0.802, 0.711), "lowpass": (0.880, 0.753, 0.631), "distortion": (0.720, 0.668, 0.668)}
TARGETS = {("reverb", "near"): 0.90, ("reverb", "strict"): 0.80, ("lowpass", "near"): 0.85}


def world_params(a) -> dict:
    p = copy.deepcopy(load_params(ROOT / "params.yaml"))
    p["data"].update(seed=a.seed, out="data/raw", workers=2)
    p["data"]["synthetic"].update(duration=float(a.duration), tracks={"train": a.train, "reference": a.reference, "test": 0})
    p["contaminate"].update(preset="effects", seed=a.seed, out="data/contaminated")
    return p


def build(params: dict, folder: Path) -> None:
    """prepare -> contaminate with the stage functions, in ``folder`` (skipped when built with these params)."""
    from stemsift.stages import contaminate, prepare

    done = folder / "built.json"
    if done.is_file() and json.loads(done.read_text()) == {k: params[k] for k in ("data", "contaminate")}:
        return
    folder.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(folder)  # the stages write metrics/ relative to the working directory
    try:
        t0 = time.perf_counter()
        prepare.run(params)
        contaminate.run(params)
        print(f"world built in {time.perf_counter() - t0:.0f} s", flush=True)
    finally:
        os.chdir(cwd)
    done.write_text(json.dumps({k: params[k] for k in ("data", "contaminate")}))


def code_hash() -> str:
    src = ROOT / "src/stemsift/clean"
    return hashlib.sha1(b"".join((src / f).read_bytes() for f in ("degrade.py", "processing.py"))).hexdigest()[:10]


def song_auc_by_kind(table: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """Song ROC-AUC of each effect kind's songs against the clean songs (detection() reports per defect only)."""
    from sklearn.metrics import roc_auc_score

    kind = truth.groupby("track_id").kind.agg(lambda k: next((x for x in k if x), "clean"))
    songs = table.groupby("track_id").song_score.first().to_frame().join(kind)
    out = {}
    for k in sorted(set(songs.kind) - {"clean"}):
        part = songs[songs.kind.isin(["clean", k])]
        out[k] = round(float(roc_auc_score(part.kind == k, -part.song_score)), 4)
    return out


def run_config(name: str, folder: Path, options: dict, seed: int) -> dict:
    opts = {**options, "exclude": {**CONFIGS, **EXTRA}[name]}
    key = hashlib.sha1(json.dumps([opts, seed, code_hash()], sort_keys=True).encode()).hexdigest()[:12]
    cache = folder / "results" / f"{name.replace(':', '-')}-{key}.json"
    truth = pd.read_parquet(folder / "data/contaminated" / TRUTH)
    if cache.is_file():
        out = json.loads(cache.read_text())
        out["song_auc"].update(song_auc_by_kind(pd.read_parquet(cache.with_suffix(".parquet")), truth))
        return out
    ss = StemSet(folder / "data/contaminated")
    view = StemView.of(ss)
    cleaner = get_cleaner("degrade", opts, seed)
    t0 = time.perf_counter()
    table = cleaner.score(view)
    secs = time.perf_counter() - t0
    m = detection(table, truth, [0.75])
    m["song_auc"].update(song_auc_by_kind(table, truth))
    out = {"config": name, "exclude": opts["exclude"], "seconds": round(secs, 1),
           "train_seconds": round(cleaner.train_seconds, 1), "stem_auc": m["stem_auc"],
           "song_auc": m["song_auc"]}
    cache.parent.mkdir(exist_ok=True)
    table.to_parquet(cache.with_suffix(".parquet"), index=False)  # per-stem scores, for a closer look
    cache.write_text(json.dumps(out, indent=2))
    print(f"{name:16s} {secs:6.1f} s  stem AUC {m['stem_auc']}  song AUC {m['song_auc']['all']}", flush=True)
    return out


def table(results: dict) -> list[dict]:
    rows = []
    for effect in HELD_OUT:
        r = {"effect": effect, "seen": results["seen"]["stem_auc"].get(effect),
             "near": results[f"near:{effect}"]["stem_auc"].get(effect),
             "strict": results[f"strict:{effect}"]["stem_auc"].get(effect),
             "song_seen": results["seen"]["song_auc"].get(effect),
             "song_near": results[f"near:{effect}"]["song_auc"].get(effect),
             "song_strict": results[f"strict:{effect}"]["song_auc"].get(effect),
             "prototype": PROTOTYPE[effect]}
        rows.append(r)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", default="/tmp/stemsift-degrade-world")
    ap.add_argument("--train", type=int, default=60)
    ap.add_argument("--reference", type=int, default=20)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS) + list(EXTRA))
    ap.add_argument("--options", default="{}", help="JSON overrides of cleaners.degrade (e.g. '{\"copies\": 4}')")
    ap.add_argument("--json", nargs="?", const="metrics/bench/degrade.json", help="write the table (default path %(const)s)")
    ap.add_argument("--positives", default="reference", choices=["reference", "collection"],
                    help="degrade.positives: reference (the table in docs/cleaners.md: nothing of the collection's own "
                         "effect stems is ever a positive) or collection (the default of params.yaml)")
    a = ap.parse_args()
    params = world_params(a)
    folder = Path(a.world) / f"seed{a.seed}-{a.train}-{a.reference}-{a.duration:g}s"
    build(params, folder)
    options = {**(params.get("cleaners", {}).get("degrade") or {}), "positives": a.positives, **json.loads(a.options)}
    results = {name: run_config(name, folder, options, int(params["score"]["seed"])) for name in a.configs}
    if not set(CONFIGS) <= set(results):
        return
    for name in EXTRA:  # reported when computed (--configs strictest:reverb ...)
        if any(folder.glob(f"results/{name.replace(':', '-')}-*.json")):
            results[name] = run_config(name, folder, options, int(params["score"]["seed"]))
    rows = table(results)
    print(f"\n`degrade` on `effects`: {a.train} training songs, {a.reference} reference songs, {a.duration:g} s, seed {a.seed}")
    print(f"{'effect':11s} {'seen':>6s} {'near':>6s} {'strict':>6s}   song AUC seen/near/strict   prototype")
    for r in rows:
        print(f"{r['effect']:11s} {r['seen']:6.3f} {r['near']:6.3f} {r['strict']:6.3f}   "
              f"{r['song_seen']:.3f} / {r['song_near']:.3f} / {r['song_strict']:.3f}      "
              + " / ".join(f"{v:.3f}" for v in r["prototype"]))
    for name in EXTRA:
        if name in results:
            effect = name.split(":")[1]
            print(f"{effect} with {' + '.join(EXTRA[name])} excluded: stem AUC {results[name]['stem_auc'][effect]:.3f}, "
                  f"song AUC {results[name]['song_auc'][effect]:.3f}")
    seen = results["seen"]
    print(f"song AUC (seen, all effects) {seen['song_auc']['all']:.3f}; stem AUC {seen['stem_auc']['all']:.3f}; "
          f"training {seen['train_seconds']:.0f} s, training + scoring {seen['seconds']:.0f} s (2 shared cores)")
    short = [f"{e} {c} {next(r[c] for r in rows if r['effect'] == e):.3f} < {t}" for (e, c), t in TARGETS.items()
             if next(r[c] for r in rows if r["effect"] == e) < t]
    short += [f"{r['effect']} {c} {r[c]:.3f} < prototype {p}" for r in rows
              for c, p in zip(("seen", "near", "strict"), r["prototype"]) if r[c] < p]
    print("targets: " + ("all met" if not short else "short: " + "; ".join(short)))
    if a.json:
        out = {"world": {"train": a.train, "reference": a.reference, "duration": a.duration, "seed": a.seed,
                         "preset": "effects"}, "options": options, "rows": rows,
               "configs": results, "short_of_targets": short}
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
