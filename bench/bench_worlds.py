"""Every separator-free cleaner in every data world, over several draws: song ROC-AUC mean ± sample std (ddof=1).

A world is a SoundFont × music texture × stem levels × contamination preset (params.yaml `worlds`); a draw
re-draws the songs, the reference split and the contamination (data.seed = contaminate.seed = score.seed = draw).
Each draw is built with the pipeline's own stage functions (prepare → contaminate → embed) in its own folder
and scored with the real cleaners; the truth is read only after scoring. Defaults are chosen by the *worst tuning
world's* mean over draws; the held-out world (worlds.held_out) is reported last and never enters that choice.

    python bench/bench_worlds.py                           # every world, worlds.draws draws, -> metrics/worlds.json
    python bench/bench_worlds.py --worlds tim-pop-mixed --draws 1 --variants blind fad   # a subset
    python bench/bench_worlds.py --collect-only            # re-read the cached per-draw results

`loss`, `unlearning` and `selfrefine` need a trained separator or classifier per draw and are left out here
(their cost is a training per draw); `make evidence` measures them.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from stemsift.params import load_params

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("label_noise", "bleeding", "effects")
EARLIER = "(earlier run)"  # rows kept from an earlier worlds.json (--earlier): other code or another CPU
OTHER_SHARES = (0.25, 0.75, 0.9, 1.0)  # clean shares the automatic ratio is also measured at (every world's own is 1/2)
BUILT_FROM = ("data", "contaminate", "embed")  # the params blocks a draw's data is built from

# name -> (cleaner, overrides of its `cleaners.<name>` block and of its components' blocks). A name without
# "collection" is a variant measured before `degrade.positives: collection`: it reads degrade from the reference split only.
# Every variant named before fad's collection neighbours pins fad to the reference stems, and every variant named before
# leak's collection calibration pins leak to the reference songs (as each was measured).
REFERENCE_ONLY = {"fad": {"neighbours": "reference"}, "leak": {"calibration": "reference", "sided": "one"}}
FAD_COLLECTION = {"fad": {"neighbours": "collection"}}  # neighbours: the references and the collection's other songs
MEAN = {"segment_pool": "mean"}  # every variant named before degrade's segment median pools a stem's segments by the mean
REF = {"degrade": {"positives": "reference", **MEAN}, **REFERENCE_ONLY}
COLLECTION = {"degrade": {"positives": "collection", "trim_rounds": 0, **MEAN}, **REFERENCE_ONLY}
# SRR-style refined positives
TRIMMED = {"degrade": {"positives": "collection", "trim": 0.2, "trim_rounds": 2, **MEAN}, **REFERENCE_ONLY}


def _blind(components: list[str], song: str, calibration: str, degrade: dict = REF, **more) -> tuple[str, dict]:
    return "blind", {"blind": {"components": components, "song": song, "calibration": calibration, **more}, **degrade}


FLD, LD, FD, FL = ["fad", "leak", "degrade"], ["leak", "degrade"], ["fad", "degrade"], ["fad", "leak"]
VARIANTS: dict[str, tuple[str, dict]] = {
    "random": ("random", {}),
    "level": ("level", {}),
    "fad": ("fad", {}),
    "fad pooled+median": ("fad", {"fad": {"reference": "pooled", "calibration": "median", "neighbours": "reference"}}),
    "fad, collection neighbours": ("fad", FAD_COLLECTION),
    "leak": ("leak", {}),
    "leak uncalibrated": ("leak", {"leak": {"calibration": "none", "sided": "one"}}),
    "leak two-sided": ("leak", {"leak": {"sided": "two", "calibration": "reference"}}),
    "leak, reference calibration": ("leak", {"leak": {"calibration": "reference", "sided": "one"}}),
    "leak one-sided, collection calibration": ("leak", {"leak": {"sided": "one"}}),
    "degrade": ("degrade", {}),
    "degrade, reference positives": ("degrade", REF),
    "degrade, collection": ("degrade", COLLECTION),
    "degrade, collection trimmed": ("degrade", TRIMMED),
    "degrade, segment mean (before)": ("degrade", {"degrade": MEAN}),
    "mlp": ("mlp", {}),
    "blind": ("blind", {}),
    "blind, degrade segment mean (before)": ("blind", {"degrade": MEAN}),
    "blind, leak reference calibration": ("blind", {"leak": {"calibration": "reference", "sided": "one"}, "degrade": MEAN}),
    "blind, leak one-sided": ("blind", {"leak": {"sided": "one"}, "degrade": MEAN}),
    "blind fad+leak, song fusion (before)": ("blind", {"blind": {"components": FL, "song": "components",
                                                                 "calibration": "training"},
                                                       **REFERENCE_ONLY, "leak": {"calibration": "none", "sided": "one"}}),
    "blind fad+leak, worst stem": _blind(FL, "worst", "training"),
    "blind fad+leak+degrade, worst stem": _blind(FLD, "worst", "training"),
    "blind fad+leak+degrade, mean": _blind(FLD, "mean", "training"),
    "blind fad+degrade, worst stem": _blind(FD, "worst", "training"),
    "blind leak+degrade, worst stem": _blind(LD, "worst", "training"),
    "blind leak+degrade, mean": _blind(LD, "mean", "training"),
    "blind fad+leak+degrade, rank_mean, mean": _blind(FLD, "mean", "training", fusion="rank_mean"),
    "blind fad+leak+degrade, song fusion": _blind(FLD, "components", "training"),
    "blind reference-null": _blind(FLD, "worst", "reference"),
    "blind reference-null, mean": _blind(FLD, "mean", "reference"),
    "blind reference-null, rank_mean": _blind(FLD, "worst", "reference", fusion="rank_mean"),
    "blind fad+degrade, reference-null": _blind(FD, "worst", "reference"),
    "blind leak+degrade, reference-null": _blind(LD, "worst", "reference"),
    "blind both-null": _blind(FLD, "worst", "both"),
    "blind both-null, mean (previous default)": _blind(FLD, "mean", "both"),
    "blind leak+degrade, both-null": _blind(LD, "worst", "both"),
    "blind collection, both-null, mean": _blind(FLD, "mean", "both", COLLECTION),
    "blind collection, reference-null": _blind(FLD, "worst", "reference", COLLECTION),
    "blind collection, training": _blind(FLD, "worst", "training", COLLECTION),
    "blind collection trimmed, training": _blind(FLD, "worst", "training", TRIMMED),
    "blind collection trimmed, reference-null": _blind(FLD, "worst", "reference", TRIMMED),
    "blind collection trimmed, fad collection neighbours": _blind(FLD, "worst", "training", {**TRIMMED, **FAD_COLLECTION}),
    "blind leak+degrade collection, reference-null": _blind(LD, "worst", "reference", COLLECTION),
    "blind leak+degrade collection, reference-null, mean": _blind(LD, "mean", "reference", COLLECTION),
    "blind leak+degrade collection, both-null": _blind(LD, "worst", "both", COLLECTION),
    "blind leak+degrade collection, training": _blind(LD, "worst", "training", COLLECTION),
    "blind fad+degrade collection, training": _blind(FD, "worst", "training", COLLECTION),
    "blind fad+degrade collection, reference-null": _blind(FD, "worst", "reference", COLLECTION),
    "blind, max_z (before)": ("blind", {}),
    "blind, bimodality weights": ("blind", {"blind": {"weights": "bimodality"}}),
    "blind, soft_min, bimodality weights": ("blind", {"blind": {"fusion": "soft_min", "weights": "bimodality"}}),
    "blind, soft_min τ 0.5": ("blind", {"blind": {"fusion": "soft_min", "temperature": 0.5}}),
    "blind, soft_min τ 2": ("blind", {"blind": {"fusion": "soft_min", "temperature": 2.0}}),
    "hybrid": ("hybrid", {}),
    "hybrid (blind max_z, before)": ("hybrid", {}),
    "hybrid (previous blind)": ("hybrid", {"blind": {"components": FLD, "song": "mean", "calibration": "both"}, **REF}),
    "hybrid (blind before)": ("hybrid", {"blind": {"components": FLD, "song": "worst", "calibration": "training"}, **REF}),
}


# every blind variant but the default was measured with `blind.fusion: max_z` (the default before soft_min), and
# every hybrid variant but the default over a max_z blind: pin them to it
VARIANTS = {name: (cleaner, {**over, "blind": {"fusion": "max_z", **over.get("blind", {})}})
            if cleaner in ("blind", "hybrid") and name not in ("blind", "hybrid") else (cleaner, over)
            for name, (cleaner, over) in VARIANTS.items()}


def merged(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merged(out.get(k) or {}, v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def world_params(base: dict, world: dict, cfg: dict, draw: int) -> dict:
    """The params of one draw of one world (paths relative to the draw's folder)."""
    sf = world.get("soundfont", "default")
    synthetic = {"soundfont": sf, "duration": float(cfg["duration"]), "tracks": dict(cfg["tracks"]),
                 **{k: world[k] for k in ("texture", "level_spread_db", "chorale_share") if k in world}}
    return merged(base, {"data": {"source": "synthetic", "seed": draw, "synthetic": synthetic},
                         "contaminate": {"preset": world["preset"], "seed": draw, **world.get("contaminate", {})},
                         "score": {"seed": draw}, "compute": {"executor": "local"}})


def same_world(folder: Path, params: dict) -> bool:
    """Built from these params: the blocks prepare → contaminate → embed read (a cleaner's option rebuilds nothing)."""
    done = folder / "built.json"
    if not done.is_file():
        return False
    built = lambda p: {k: p.get(k) for k in BUILT_FROM}  # noqa: E731
    return built(json.loads(done.read_text())) == built(params)


def build(params: dict, folder: Path) -> None:
    """prepare → contaminate → embed with the stage functions, in ``folder`` (skipped when already built)."""
    from stemsift.stages import contaminate, embed, prepare

    done = folder / "built.json"
    if same_world(folder, params):
        return
    folder.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        t0 = time.perf_counter()
        prepare.run(params)
        contaminate.run(params)
        embed.run(params)
        print(f"  built in {time.perf_counter() - t0:.0f} s", flush=True)
    finally:
        os.chdir(cwd)
    done.write_text(json.dumps(params))


def score_variants(params: dict, folder: Path, names: list[str]) -> list[dict]:
    """Song / stem AUC per variant on one built draw; components are scored once per distinct option set."""
    from stemsift.catalogue import TRUTH
    from stemsift.clean import CleanerError, StemView, get_cleaner
    from stemsift.clean.metrics import detection, song_truth
    from stemsift.clean.ratio import auto_keep
    from stemsift.embed.cache import EmbeddingStore
    from stemsift.params import EmbedParams, stage_params
    from stemsift.stemset import StemSet
    from stemsift import memo

    cwd = os.getcwd()
    os.chdir(folder)
    try:
        ss = StemSet(params["contaminate"]["out"])
        store = EmbeddingStore(stage_params(params, "embed", EmbedParams).folder)
        truth = pd.read_parquet(Path(params["contaminate"]["out"]) / TRUTH)
        cache: dict[str, pd.DataFrame] = {}
        nulls: dict[str, pd.DataFrame | None] = {}  # each component's clean null (Cleaner.null), beside its table
        seconds: dict[str, float] = {}
        seed = int(params["score"]["seed"])
        stored = Path("components")  # component tables by cleaner code + options: fusions re-read them

        def key_of(name: str, blocks: dict) -> str:  # a cleaner's options and, recursively, its components'
            comps = get_cleaner(name, blocks.get(name, {}), seed).components()
            return json.dumps([name, blocks.get(name, {}), [key_of(c, blocks) for c in comps]], sort_keys=True)

        def modules_of(name: str, blocks: dict) -> list[str]:  # a cleaner's module and, recursively, its components'
            cleaner = get_cleaner(name, blocks.get(name, {}), seed)
            return [type(cleaner).__module__] + [m for c in cleaner.components() for m in modules_of(c, blocks)]

        def scored(name: str, blocks: dict) -> pd.DataFrame:
            key = key_of(name, blocks)
            code = memo.code_key(*modules_of(name, blocks))  # edited code (its own or a component's): new key
            path = stored / f"{hashlib.sha1((code + key).encode()).hexdigest()[:16]}.parquet"
            null_path = path.with_name(f"{path.stem}.null.parquet")
            if key not in cache and path.is_file():  # a component table scored by an earlier run of this code
                cache[key] = pd.read_parquet(path)
                nulls[key] = pd.read_parquet(null_path) if null_path.is_file() else None
            if key not in cache:
                cleaner = get_cleaner(name, blocks.get(name, {}), seed)
                view = StemView.of(ss, store)
                for comp in cleaner.components():
                    view.scores[comp] = scored(comp, blocks)
                    if (null := nulls.get(key_of(comp, blocks))) is not None:
                        view.nulls[comp] = null
                t0 = time.perf_counter()
                cache[key] = cleaner.score(view)
                nulls[key] = cleaner.null
                seconds[key] = time.perf_counter() - t0
                stored.mkdir(exist_ok=True)
                for table, out in ((cache[key], path), (cleaner.null, null_path)):
                    if table is not None:
                        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
                        table.to_parquet(tmp)
                        os.replace(tmp, out)
            return cache[key]

        rows = []
        a = params["filter"]["auto"]
        for variant in names:
            cleaner, over = VARIANTS[variant]
            blocks = merged(params.get("cleaners") or {}, over)
            t0 = time.perf_counter()
            try:
                table = scored(cleaner, blocks)
            except CleanerError as e:  # e.g. an option this checkout does not have yet
                rows.append({"variant": variant, "error": str(e)})
                print(f"  {variant}: {e}", flush=True)
                continue
            m = detection(table, truth, [])
            by_song = table.groupby("track_id")
            songs = by_song.song_score.first()
            # both estimators on every variant: the two-population cut (ratio_auto) and storey where song_p exists
            auto = auto_keep(songs, "gmm", seed, int(a.get("min_songs", 10)), float(a.get("min_separation", 2.0)))
            song_p = by_song.song_p.first() if "song_p" in table else None
            storey = auto_keep(songs, "storey", seed, int(a.get("min_songs", 10)), song_p=song_p,
                               storey_lambda=float(a.get("storey_lambda", 0.5))) if song_p is not None else None
            clean = song_truth(truth).reindex(songs.index).fillna("clean") == "clean"
            at_shares = {}
            for share in OTHER_SHARES:  # the estimators at other clean shares: a seeded subsample of one class
                sub = share_subsample(clean, share, seed)
                auto_s = auto_keep(songs[sub], "gmm", seed, int(a.get("min_songs", 10)),
                                   float(a.get("min_separation", 2.0)))
                storey_s = auto_keep(songs[sub], "storey", seed, int(a.get("min_songs", 10)), song_p=song_p[sub],
                                     storey_lambda=float(a.get("storey_lambda", 0.5))) if song_p is not None else None
                at_shares.update({f"ratio_auto@{share:g}": round(auto_s.ratio, 4),
                                  f"ratio_storey@{share:g}": round(storey_s.ratio, 4) if storey_s else None,
                                  f"clean_share@{share:g}": round(float(clean[sub].mean()), 4)})
            row = {"variant": variant, "song_auc": m["song_auc"]["all"], "stem_auc": m["stem_auc"]["all"],
                   **{f"song_auc_{k}": m["song_auc"].get(k) for k in KINDS},
                   **{f"stem_auc_{k}": v for k, v in m["stem_auc"].items() if k != "all"},
                   "ratio_auto": round(auto.ratio, 4), "ratio_storey": round(storey.ratio, 4) if storey else None,
                   "clean_share": m["clean_share@1"], **at_shares,
                   "seconds": round(time.perf_counter() - t0, 1)}
            rows.append(row)
            storey_note = f", storey {row['ratio_storey']:.2f}" if row["ratio_storey"] is not None else ""
            print(f"  {variant:38s} song AUC {row['song_auc']}  r_auto {row['ratio_auto']:.2f}{storey_note} "
                  f"(clean {row['clean_share']:.2f})", flush=True)
        return rows
    finally:
        os.chdir(cwd)


def share_subsample(clean: pd.Series, share: float, seed: int) -> pd.Index:
    """Songs at clean share ``share``: every song of the class that share needs more of, and a seeded sample of
    the other (the scores are not recomputed: each component's scale still saw the whole collection)."""
    rng = np.random.default_rng(seed)
    good, bad = clean[clean].index, clean[~clean].index
    if share >= clean.mean():
        bad = rng.choice(bad, min(len(bad), round(len(good) * (1 - share) / share)), replace=False)
    else:
        good = rng.choice(good, min(len(good), round(len(bad) * share / (1 - share))), replace=False)
    return pd.Index(sorted(set(good) | set(bad)))


def summarise(results: pd.DataFrame, held_out: str) -> pd.DataFrame:
    """variant × world: mean ± sample std over draws; worst tuning world's mean (the default criterion)."""
    ok = results[results.song_auc.notna()]
    g = ok.groupby(["variant", "world"]).song_auc
    table = (g.mean().round(3).astype(str) + " ± " + g.std(ddof=1).round(3).astype(str)
             + " (" + g.count().astype(str) + ")").unstack("world")
    means = g.mean().unstack("world")
    tuning = [w for w in means.columns if w != held_out]
    table["worst tuning world"] = means[tuning].min(axis=1).round(3)
    table["mean tuning worlds"] = means[tuning].mean(axis=1).round(3)
    if held_out in table.columns:
        table = table[[c for c in table.columns if c != held_out] + [held_out]]
    return table.sort_values("worst tuning world", ascending=False)


def ratio_errors(results: pd.DataFrame, held_out: str) -> pd.DataFrame:
    """variant (and estimator) × world: mean over draws of |automatic ratio - true clean share| (filter.ratio: auto);
    `storey` rows for the variants whose song scores are p-values."""
    ok = results[results.song_auc.notna()]
    parts = [ok.assign(estimator=ok.variant + " (gmm)", err=(ok.ratio_auto - ok.clean_share).abs())]
    if "ratio_storey" in ok:
        st = ok[ok.ratio_storey.notna()]
        parts.append(st.assign(estimator=st.variant + " (storey)", err=(st.ratio_storey - st.clean_share).abs()))
    both = pd.concat(parts)
    table = both.groupby(["estimator", "world"]).err.mean().round(3).unstack("world")
    tuning = [w for w in table.columns if w != held_out]
    table["worst tuning world"] = table[tuning].max(axis=1)
    if held_out in table.columns:
        table = table[[c for c in table.columns if c != held_out] + [held_out]]
    return table.sort_values("worst tuning world")


def ratio_errors_by_share(results: pd.DataFrame, held_out: str) -> pd.DataFrame:
    """estimator × true clean share (each world's own 1/2 and the sub-samples of OTHER_SHARES): the worst tuning
    world's mean over draws of |r - true share|, and the held-out world's."""
    ok = results[results.song_auc.notna()]
    parts = []
    for est, col in (("gmm", "ratio_auto"), ("storey", "ratio_storey")):
        for share in (0.5, *OTHER_SHARES):
            r, true = (col, "clean_share") if share == 0.5 else (f"{col}@{share:g}", f"clean_share@{share:g}")
            if r not in ok or true not in ok:
                continue
            got = ok[ok[r].notna()]
            parts.append(got.assign(estimator=got.variant + f" ({est})", share=share, err=(got[r] - got[true]).abs()))
    if not parts:
        return pd.DataFrame()
    both = pd.concat(parts)
    mean = both.groupby(["estimator", "share", "world"]).err.mean()
    tuning = mean[mean.index.get_level_values("world") != held_out].groupby(level=["estimator", "share"]).max()
    table = tuning.round(3).unstack("share")
    table.columns = [f"worst tuning world at {c:g}" for c in table.columns]
    held = mean[mean.index.get_level_values("world") == held_out].droplevel("world").round(3).unstack("share")
    if not held.empty:
        table[[f"held-out at {c:g}" for c in held.columns]] = held.reindex(table.index).to_numpy()
    table["worst tuning world, any share"] = tuning.groupby(level="estimator").max().round(3)
    return table.sort_values("worst tuning world, any share")


def with_earlier(rows: list[dict], earlier: Path) -> list[dict]:
    """``rows`` plus the (variant, world, draw) rows of an earlier worlds.json that this run lacks, renamed
    "<variant> (earlier run)": measured by other code or another CPU, shown, never compared or chosen by the rule."""
    have = {(r["variant"], r["world"], r["draw"]) for r in rows}
    old = [r for r in json.loads(earlier.read_text())["rows"] if (r["variant"], r["world"], r["draw"]) not in have]
    label = lambda v: v if v.endswith(EARLIER) else f"{v} {EARLIER}"  # noqa: E731  an earlier file's earlier rows
    return rows + [{**r, "variant": label(r["variant"])} for r in old]


def draw_differences(results: pd.DataFrame, a: str, b: str):
    """``a`` minus ``b`` song AUC on the draws both have, grouped by world."""
    wide = results.pivot_table(index=["world", "draw"], columns="variant", values="song_auc")
    return (wide[a] - wide[b]).dropna().groupby(level="world")


def paired_gain(results: pd.DataFrame, a: str, b: str, held_out: str) -> tuple[float, float]:
    """Mean over the tuning worlds of ``a`` minus ``b`` song AUC, paired by draw, and its standard error
    (each world's paired differences: var / draws; the worlds independent)."""
    d = draw_differences(results[results.song_auc.notna() & (results.world != held_out)], a, b)
    if d.ngroups == 0:
        return float("nan"), float("nan")
    var = (d.var(ddof=1) / d.count()).fillna(0.0)
    return float(d.mean().mean()), float(np.sqrt(var.sum()) / d.ngroups)


def choose(results: pd.DataFrame, held_out: str, among=None, default: str = "blind") -> tuple[str, list[str]]:
    """The documented rule over the ``among`` variants (default: every blind variant): the best worst-tuning-world
    mean; variants within that world's draw-to-draw std (ddof=1) of it are tied. A tied variant replaces the
    current default only where its gain over it, paired by draw and averaged over the tuning worlds, is more than
    twice its standard error (a gain inside the noise changes nothing); among those, the highest mean over the
    tuning worlds. Returns the choice and the tied set (by mean over the tuning worlds)."""
    ok = results[results.song_auc.notna() & (results.world != held_out)]
    ok = ok[ok.variant.isin(among if among is not None else [v for v in ok.variant.unique()
                                                             if v.startswith("blind") and not v.endswith(EARLIER)])]
    means = ok.groupby(["variant", "world"]).song_auc.mean().unstack("world")
    worst = means.min(axis=1)
    best = worst.idxmax()
    spread = ok[(ok.variant == best) & (ok.world == means.loc[best].idxmin())].song_auc.std(ddof=1)
    spread = 0.0 if pd.isna(spread) else spread  # one draw: no spread to tie within
    tied = worst[worst >= worst[best] - spread].index
    order = list(means.loc[tied].mean(axis=1).sort_values(ascending=False).index)
    if default not in order:  # the current default is not tied with the best: the best worst world decides
        return order[0], order
    resolved = [v for v in order if v != default and (lambda g: g[0] > 2 * g[1])(paired_gain(ok, v, default, held_out))]
    return (resolved[0] if resolved else default), order


def paired(results: pd.DataFrame, a: str, b: str, held_out: str) -> pd.DataFrame:
    """Per world: Δ song AUC of variant ``a`` minus ``b`` on the same draws, mean ± std (ddof=1), min, max."""
    d = draw_differences(results, a, b)
    table = pd.DataFrame({"Δ mean": d.mean().round(3), "std": d.std(ddof=1).round(3), "min": d.min().round(3),
                          "max": d.max().round(3), "draws": d.count()})
    return table.loc[[w for w in table.index if w != held_out] + [w for w in table.index if w == held_out]]


def markdown(table: pd.DataFrame, first: str = "variant") -> str:
    """The summary as a Markdown table (docs/worlds.md)."""
    cols = list(table.columns)
    lines = [f"| {first} | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    lines += [f"| {row[0]} | " + " | ".join("—" if pd.isna(x) else str(x) for x in row[1:]) + " |"
              for row in table.itertuples()]
    return "\n".join(lines)


def main() -> None:
    base = load_params(ROOT / "params.yaml")
    cfg = base["worlds"]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worlds", nargs="+", default=list(cfg["list"]))
    ap.add_argument("--draws", type=int, default=int(cfg["draws"]))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--cache", default=os.environ.get("STEMSIFT_WORLDS", str(ROOT / ".stemsift-cache" / "worlds")))
    ap.add_argument("--json", default=str(ROOT / "metrics" / "worlds.json"))
    ap.add_argument("--collect-only", action="store_true", help="only re-read the cached per-draw results")
    ap.add_argument("--force", action="store_true", help="re-score the variants even where a draw has them")
    ap.add_argument("--earlier", type=Path, help="an earlier worlds.json: its rows this run lacks are shown as "
                                                   "'<variant> (earlier run)', outside the rule")
    a = ap.parse_args()
    unknown = [w for w in a.worlds if w not in cfg["list"]]
    if unknown:
        sys.exit(f"worlds.list: no world {unknown[0]!r} (have: {', '.join(cfg['list'])})")
    rows = []
    for world in a.worlds:
        for draw in range(a.draws):
            params = world_params(base, cfg["list"][world], cfg, draw)
            folder = Path(a.cache) / world / f"draw{draw}"
            result = folder / "scores.json"
            if a.collect_only or (not a.force and result.is_file() and set(a.variants) <= {r["variant"] for r in json.loads(result.read_text())}
                                  and same_world(folder, params)):
                if result.is_file():
                    rows += [{**r, "world": world, "draw": draw} for r in json.loads(result.read_text())
                             if r["variant"] in a.variants]
                continue
            print(f"{world} draw {draw}", flush=True)
            build(params, folder)
            got = score_variants(params, folder, a.variants)
            old = {r["variant"]: r for r in json.loads(result.read_text())} if result.is_file() else {}
            old.update({r["variant"]: r for r in got})
            result.write_text(json.dumps(list(old.values()), indent=1))
            rows += [{**r, "world": world, "draw": draw} for r in got]
    if a.earlier is not None:
        if not a.earlier.is_file():
            sys.exit(f"{a.earlier}: no such file (--earlier wants an earlier worlds.json)")
        rows = with_earlier(rows, a.earlier)
    results = pd.DataFrame(rows)
    if results.empty or "song_auc" not in results:
        sys.exit("bench_worlds: no results")
    table = summarise(results, cfg["held_out"])
    with pd.option_context("display.width", 250, "display.max_columns", 40, "display.max_colwidth", 40):
        print(table.to_string())
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"draws": a.draws, "tracks": cfg["tracks"], "duration": cfg["duration"],
                               "held_out": cfg["held_out"], "worlds": {w: cfg["list"][w] for w in a.worlds},
                               "rows": results.replace({np.nan: None}).to_dict("records")}, indent=1) + "\n")
    os.replace(tmp, out)
    results.to_csv(out.with_suffix(".csv"), index=False)
    errors = ratio_errors(results, cfg["held_out"])
    text = markdown(table) + "\n\nAutomatic ratio, mean over draws of |r - true clean share|:\n\n" + markdown(errors) + "\n"
    by_share = ratio_errors_by_share(results[~results.variant.str.endswith(EARLIER)], cfg["held_out"])
    if not by_share.empty:
        text += ("\nAutomatic ratio at other clean shares (sub-samples of each draw's songs), worst tuning world's mean "
                 "|r - true share|:\n\n" + markdown(by_share, "estimator") + "\n")
    if results.variant.str.startswith("blind").any() and (results.world != cfg["held_out"]).any():  # the rule needs tuning worlds
        chosen, tied = choose(results, cfg["held_out"])
        text += f"\nThe rule's choice among the blind variants: {chosen} (tied: {'; '.join(tied)}).\n"
        gains = [(v, *paired_gain(results, v, "blind", cfg["held_out"])) for v in tied if v != "blind"]
        if gains:
            text += ("\nPaired by draw against the default `blind`, mean over the tuning worlds ± standard error: "
                     + "; ".join(f"{v} {g:+.4f} ± {se:.4f}" for v, g, se in gains) + ".\n")
        previous = "blind, max_z (before)"  # the default before soft_min
        if {"blind", previous} <= set(results.variant):
            text += f"\nPaired by draw, blind minus {previous}:\n\n" + markdown(paired(results, "blind", previous, cfg["held_out"]), "world") + "\n"
        print(text[text.index("\nThe rule's choice"):])
    out.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
