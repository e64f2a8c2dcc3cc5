"""`make evidence`: the papers' Table 1 (`mixed`) and Table 2 (`effects`) analogues. One DVC experiment per
(preset, cleaner, keep ratio) of the `evidence.scale` grid, longer trainings and a larger clean test split, run
through `dvc exp run --queue`; then every set's per-song SDR is read back from its experiment's commit and compared
to the baseline's on the same songs (by audio hash) and seeds: Δ SDR and gap closed on the SDR column's own
statistic, with intervals over seeds and songs (separate/paired.py), % clean kept.

Each experiment evaluates only the sets it owns (one experiment per preset the fixed sets, the others their
`cleaned` set): metrics files an experiment did not recompute are its parent commit's, never read. A name carries a
hash of everything that decides its result: the code its stages run (memo.code_key of each stage module), their
dvc.yaml definitions, every params block they depend on (with the experiment's overrides) and their inputs; a
finished experiment counts only when its own commit yields that same hash. So a rerun skips experiments already
finished (resumable), a grid can grow without redoing them, and edited code, params or data never reuse one."""
from __future__ import annotations

import copy
import io
import json
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pandas as pd
import yaml

from stemsift import memo
from stemsift.separate.paired import pair_bootstrap_ci, paired_delta, paired_ratio

OUT = Path("metrics/evidence.json")
TABLES = Path("metrics/evidence")
FIXED = ("baseline", "oracle", "reference", "refined")
BLIND = ("random", "fad", "leak", "loss", "unlearning", "blind")  # use no labels beyond the clean reference split


@dataclass(frozen=True)
class Scale:
    presets: list[str]
    cleaners: list[str]               # each trained at every ratio below (the `cleaned` set of one experiment each)
    ratios: list                      # "auto" and/or numbers
    fixed: list[str]                  # baseline is always there
    seeds: list[int]
    steps_per_target: int
    steps_per_epoch: int
    test_songs: int
    jobs: int = 1                     # experiments at once (dvc queue workers)
    workers: int = 2                  # trainings at once inside one experiment (train.workers)
    overrides: dict = field(default_factory=dict)   # further `-S key=value` (e.g. a smaller data set for tests)

    def check(self, name: str) -> None:
        where = f"params.yaml: evidence.scales.{name}"
        if "baseline" not in self.fixed or any(s not in FIXED for s in self.fixed):
            raise ValueError(f"{where}.fixed must include baseline and only name {', '.join(FIXED)}")
        if self.steps_per_target % self.steps_per_epoch:
            raise ValueError(f"{where}: steps_per_target must be a multiple of steps_per_epoch")
        for r in self.ratios:
            if r != "auto" and not (isinstance(r, (int, float)) and 0 < r <= 1):
                raise ValueError(f"{where}.ratios: {r!r} is neither auto nor in (0, 1]")
        if not self.presets or not self.seeds:
            raise ValueError(f"{where}: presets and seeds must not be empty")


def scale_of(params: dict, name: str | None = None) -> tuple[str, Scale]:
    ev = params.get("evidence") or {}
    name = name or ev.get("scale")
    scales = ev.get("scales") or {}
    if name not in scales:
        raise ValueError(f"params.yaml: evidence.scale {name!r} is not one of evidence.scales ({', '.join(scales)})")
    sc = Scale(**scales[name])
    sc.check(name)
    return name, sc


@dataclass(frozen=True)
class Experiment:
    name: str
    preset: str
    cleaner: str | None
    ratio: object
    sets: list[str]                   # the training sets this experiment evaluates (and is read for)
    overrides: list[str]
    identity: str = ""                # hash of what decides its result (see identity()); the name carries its head

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(f"evaluate@{s}" for s in self.sets)

    def command(self, force: bool = False) -> list[str]:
        return ["dvc", "exp", "run", "--queue", *(["-f"] if force else []), "-n", self.name,
                *sum((["-S", o] for o in self.overrides), []), *self.targets]


def _label(x) -> str:
    return str(x).replace(".", "")


def plan(params: dict, name: str | None = None, root: str | Path = ".") -> tuple[str, Scale, list[Experiment]]:
    """The experiments of one scale: per preset, one for the fixed sets and one per (cleaner, ratio). A name
    carries the head of its identity (what decides its result), not the grid: adding a cleaner or a ratio keeps
    every finished experiment. root: the repository (dvc.yaml, params inputs, src/)."""
    sname, sc = scale_of(params, name)
    epochs = sc.steps_per_target // sc.steps_per_epoch
    common = [f"data.synthetic.tracks.test={sc.test_songs}", f"train.seeds={json.dumps(sc.seeds, separators=(',', ':'))}",
              f"train.epochs={epochs}", f"train.steps_per_epoch={sc.steps_per_epoch}",
              f"train.patience={epochs}",  # the whole length: the table states it
              f"train.workers={sc.workers}", "train.labels=given", "train.method=supervised",
              *(f"{k}={json.dumps(v, separators=(',', ':')) if isinstance(v, (list, dict)) else v}"
                for k, v in sc.overrides.items())]
    drafts = []
    for preset in sc.presets:
        drafts.append((f"{preset}-{'-'.join(sc.fixed)}", preset, None, None, list(sc.fixed),
                       [f"contaminate.preset={preset}", *common]))
        for cleaner in sc.cleaners:
            for ratio in sc.ratios:
                drafts.append((f"{preset}-{cleaner}-{_label(ratio)}", preset, cleaner, ratio, ["cleaned"],
                               [f"contaminate.preset={preset}", f"score.cleaner={cleaner}", f"filter.ratio={ratio}",
                                *common]))
    root = Path(root).resolve()
    cls = closures(tuple(sorted({tuple(f"evaluate@{s}" for s in d[4]) for d in drafts})), root)
    parts = {t: tree_parts(cl, root) for t, cl in cls.items()}  # once per closure: parsing the code costs
    exps = []
    for tail, preset, cleaner, ratio, sets, overrides in drafts:
        t = tuple(f"evaluate@{s}" for s in sets)
        ident = identity(cls[t], apply_overrides(params, overrides), root, root, parts[t])
        exps.append(Experiment(f"ev{ident[:10]}-{tail}", preset, cleaner, ratio, sets, overrides, ident))
    return sname, sc, exps


# ----------------------------------------------------------------------------- identity
def apply_overrides(params: dict, overrides: list[str]) -> dict:
    """params.yaml as `dvc exp run -S key=value` leaves it (values parsed as YAML, as DVC's Hydra overrides are)."""
    out = copy.deepcopy(params)
    for o in overrides:
        key, _, value = o.partition("=")
        *head, last = key.split(".")
        d = out
        for k in head:
            d = d.setdefault(k, {})
        d[last] = yaml.safe_load(value)
    return out


def _get(params: dict, key: str):
    for k in key.split("."):
        params = params.get(k) if isinstance(params, dict) else None
    return params


@dataclass(frozen=True)
class Closure:
    """What the stages behind some targets consist of (from dvc.yaml, resolved by DVC)."""
    modules: tuple[str, ...]          # stemsift.stages.<stage> of every stage that runs
    definitions: tuple[str, ...]      # their dvc.yaml entries (foreach bases included once)
    params: tuple[str, ...]           # every params key they depend on
    inputs: tuple[str, ...]           # deps no stage produces and that are not code (e.g. verdicts)
    produced: tuple[str, ...]         # every stage output of dvc.yaml (never an input)


def _produced(path: str, outs) -> bool:
    return any(path == o or path.startswith(o + "/") or o.startswith(path + "/") for o in outs)


@lru_cache(maxsize=8)
def closures(target_sets: tuple[tuple[str, ...], ...], root: Path) -> dict[tuple[str, ...], Closure]:
    """The stage closure of each target set: the targets and every stage upstream of them (DVC's own graph)."""
    import networkx as nx
    from dvc.repo import Repo

    out = {}
    with Repo(str(root)) as repo:
        index = repo.index
        by_name = {st.name: st for st in index.stages}  # name: addressing is relative to the cwd
        produced = [str(o.def_path).rstrip("/") for st in index.stages for o in st.outs]
        for targets in target_sets:
            missing = [t for t in targets if t not in by_name]
            if missing:
                raise ValueError(f"evidence: dvc.yaml has no stage {', '.join(missing)}")
            stages = set()
            for t in targets:
                stages |= {by_name[t], *nx.descendants(index.graph, by_name[t])}
            mods, keys, inputs = set(), set(), set()
            for st in stages:
                mods.add(f"stemsift.stages.{st.cmd.split()[1]}")  # `stemsift <stage> ...`: its module
                for d in st.deps:
                    if hasattr(d, "params"):
                        keys.update(d.params or [])
                        continue
                    p = str(d.def_path).rstrip("/")
                    if not p.startswith("src/") and not _produced(p, produced):
                        inputs.add(p)
            out[targets] = Closure(tuple(sorted(mods)), tuple(sorted({st.name.split("@")[0] for st in stages})),
                                   tuple(sorted(keys)), tuple(sorted(inputs)), tuple(sorted(set(produced))))
    return out


def _content(p: Path) -> object:
    """sha1 of a file, or of every file of a folder (the repo's own inputs: small, in git)."""
    return memo.key(p.read_bytes().hex()) if p.is_file() else memo.files_sha1(p)


def _fingerprint(p: Path) -> object:
    """(file, size, mtime) of a path outside git (a raw data tree of tens of GB, a soundfont): hashing it at every
    plan would take minutes; evaluate's per-song audio hashes catch a changed test set at pairing anyway."""
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    return [[f.relative_to(p).as_posix() if f != p else "", f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def tree_parts(cl: Closure, tree: Path) -> dict:
    """What a source tree contributes to an identity: the code the stage modules import (memo.code_key, read from
    its src/stemsift), their dvc.yaml definitions, and the content of the inputs among their deps."""
    stages = (yaml.safe_load((tree / "dvc.yaml").read_text()) or {}).get("stages", {})
    return {"code": memo.code_key(*cl.modules, root=tree / "src" / "stemsift"),
            "stages": {b: stages.get(b) for b in cl.definitions},
            "inputs": {i: (_content(tree / i) if (tree / i).exists() else None) for i in cl.inputs}}


def identity(cl: Closure, params: dict, tree: Path, root: Path, parts: dict | None = None) -> str:
    """Hash of what decides an experiment's result: tree_parts (code, stage definitions, inputs), the values of
    every params key its stages depend on, and the files or folders outside git that those values name (e.g.
    data.source). tree: the workspace, or an experiment's extracted commit; root: the workspace; parts: tree_parts
    already computed for this tree."""
    values = {k: _get(params, k) for k in cl.params}
    external = {}
    for v in _strings(values):
        p = Path(v) if Path(v).is_absolute() else root / v
        if not v or not p.exists():
            continue  # not a path (a name, a hub id, a mode)
        try:
            rel = p.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            rel = None  # outside the repo
        if rel is not None and (rel in ("", ".") or rel.startswith("src/") or _produced(rel, cl.inputs)
                                or _produced(rel, cl.produced)):
            continue
        external[v] = _fingerprint(p)
    return memo.key({**(parts or tree_parts(cl, tree)), "params": values, "external": external})


def _strings(x) -> list[str]:
    if isinstance(x, str):
        return [x]
    if isinstance(x, dict):
        return [s for v in x.values() for s in _strings(v)]
    if isinstance(x, list):
        return [s for v in x for s in _strings(v)]
    return []


# ----------------------------------------------------------------------------- running
def _sh(cmd: list[str], cwd: str | Path | None = None) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=cwd).stdout


def refs(root: str | Path = ".") -> dict[str, list[str]]:
    """Experiment name -> commits of every finished experiment of that name, any base: DVC writes
    refs/exps/<base>/<sha>/<name> only for an experiment that succeeded (a git read, cheap enough to poll)."""
    out: dict[str, list[str]] = {}
    for line in _sh(["git", "for-each-ref", "--sort=-committerdate", "--format=%(refname) %(objectname)",
                     "refs/exps"], root).splitlines():
        ref, commit = line.split()
        parts = ref.split("/")  # refs exps <2 hex> <38 hex> <name>; exec/ and celery/ refs are DVC's own
        if len(parts) == 5 and len(parts[2]) == 2:
            out.setdefault(parts[4], []).append(commit)
    return out


def commit_identity(exp: Experiment, commit: str, root: str | Path = ".") -> str:
    """The identity an experiment's own commit yields: its code, dvc.yaml and params.yaml (the overrides applied)
    and its git-tracked inputs, extracted from git; paths outside git from the workspace."""
    root = Path(root).resolve()
    cl = closures((exp.targets,), root)[exp.targets]
    with tempfile.TemporaryDirectory() as tmp:
        paths = [p for p in ("src/stemsift", "dvc.yaml", "params.yaml", *cl.inputs)
                 if subprocess.run(["git", "cat-file", "-e", f"{commit}:{p}"], cwd=root, capture_output=True).returncode == 0]
        archive = subprocess.run(["git", "archive", "--format=tar", commit, *paths], cwd=root, capture_output=True,
                                 check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        tree = Path(tmp)
        params = apply_overrides(yaml.safe_load((tree / "params.yaml").read_text()), exp.overrides)
        return identity(cl, params, tree, root)


def finished(exps: list[Experiment], root: str | Path = ".") -> tuple[dict[str, str], dict[str, list[str]]]:
    """(name -> commit of each experiment finished with the planned identity, name -> commits of the ones that
    finished under that name but from other code, params or inputs: never counted)."""
    found, stale, all_refs = {}, {}, refs(root)
    for e in exps:
        for commit in all_refs.get(e.name, []):  # newest first
            if commit_identity(e, commit, root) == e.identity:
                found[e.name] = commit
                break
            stale.setdefault(e.name, []).append(commit)
    return found, {n: c for n, c in stale.items() if n not in found}


def _queue_busy() -> bool:
    return any(s in _sh(["dvc", "queue", "status"]) for s in ("Queued", "Running"))


def run_grid(exps: list[Experiment], jobs: int, status_s: float = 30.0, root: str | Path = ".") -> None:
    done, stale = finished(exps, root)
    todo = [e for e in exps if e.name not in done]
    for e in exps:
        print(f"{'done  ' if e.name in done else 'queued'} {e.name}: sets {', '.join(e.sets)}"
              + (f" (a run of that name, {stale[e.name][0][:8]}, ran other code, params or inputs)" if e.name in stale
                 else ""), flush=True)
    if not todo:
        return
    # DVC 3.67 restoring a stage from its run cache (select, score, ...) reads the hash the queued commit's dvc.lock
    # holds for a directory its deps lie in, and fails ("failed to load directory") when that object is not in this
    # cache (a fresh clone, or a lock from older code): reproduce the shared stages up to `filter` first, so the lock
    # the experiments start from names only objects that are here (a no-op after `make demo`).
    subprocess.run(["dvc", "repro", "filter"], check=True, cwd=root)
    for e in todo:
        _sh(e.command(force=e.name in stale))  # -f: replace a stale one of the same name on this base
    subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], check=True)
    # wait: the refs every 2 s (cheap); `dvc queue status` (~1.5 s of CPU) every status_s, to stop when one failed.
    # (`dvc exp run --run-all` follows the logs instead, but hung here after both experiments had succeeded.)
    last, before = time.monotonic(), {n: set(c) for n, c in refs(root).items()}
    new = lambda: {n for n, c in refs(root).items() if set(c) - before.get(n, set())}  # noqa: E731
    while not {e.name for e in todo} <= new():
        if time.monotonic() - last >= status_s:
            if not _queue_busy():
                break
            last = time.monotonic()
        time.sleep(2.0)
    done, _ = finished(todo, root)
    failed = [e.name for e in todo if e.name not in done]
    if failed:
        raise RuntimeError(f"evidence: experiments failed or ran other code than planned: {', '.join(failed)} "
                           "(dvc queue logs <name>)")


# ----------------------------------------------------------------------------- statistics
def _git_file(rev: str, path: str) -> str:
    return _sh(["git", "show", f"{rev}:{path}"])


def read_experiment(exp: Experiment, rev: str, read=_git_file) -> tuple[dict[str, pd.DataFrame], dict, dict]:
    """(set -> per-song table, metrics/filter.json, metrics/contamination.json) of one finished experiment."""
    from io import StringIO

    tables = {s: pd.read_csv(StringIO(read(rev, f"metrics/eval/{s}.csv"))) for s in exp.sets}
    flt = json.loads(read(rev, "metrics/filter.json")) if "cleaned" in exp.sets else {}
    cont = json.loads(read(rev, "metrics/contamination.json"))
    return tables, flt, cont


def seed_means(table: pd.DataFrame) -> pd.Series:
    """Per seed: museval's model score (median over songs per target, then the mean of the targets)."""
    return table.groupby(["seed", "target"]).sdr.median().groupby("seed").mean()


NO_CI = [None, None]
BEST_CHOSEN_ON = ("the test split it is reported on (largest Δ there): an optimistic pick, no held-out choice; "
                  "read its interval, not its rank")


def set_row(name: str, table: pd.DataFrame, base: pd.DataFrame, oracle: pd.DataFrame | None, resamples: int) -> dict:
    """One table row. Δ and gap closed are on the SDR column's statistic (Δ = its difference from the baseline's
    when every (seed, song) pairs); delta_mean_db is the mean per-song difference, with its seed-aware interval
    and, for comparison, the old pair bootstrap's (`delta_mean_ci95_old`, which ignores seeds)."""
    s, utt = seed_means(table), table.groupby("seed").sdr_utt.mean()
    row = {"set": name, "sdr": round(float(s.mean()), 3),
           "sdr_std": round(float(s.std(ddof=1)), 3) if len(s) > 1 else None,  # sample std over seeds
           "sdr_utt": round(float(utt.mean()), 3), "seeds": int(len(s)),
           "songs": int(table.track_id.nunique())}
    if name == "baseline":
        return row
    d = paired_delta(table, base, resamples)
    if d is None:  # nothing to pair: one line, and the row says so
        print(f"evidence: {name} shares no (seed, song) with the baseline: no Δ, no gap closed")
        return {**row, "delta_db": None, "delta_ci95": NO_CI, "pairs": 0, "missing": "no (seed, song) shared with baseline"}
    m, old = paired_delta(table, base, resamples, stat="mean"), pair_bootstrap_ci(table, base, resamples)
    row.update({"delta_db": d["delta_db"], "delta_ci95": d["ci95"], "ci_over": d["ci_over"],
                "delta_mean_db": m["delta_db"], "delta_mean_ci95": m["ci95"], "delta_mean_ci95_old": old["ci95"],
                "pairs": d["pairs"], "unpaired": d["unpaired"], "paired_on": d["paired_on"]})
    if d["unpaired"]:
        print(f"evidence: {name}: {d['unpaired']} (seed, song) rows without a partner left out; Δ over {d['pairs']} pairs")
    if oracle is not None and name != "oracle":
        g = paired_ratio(table, oracle, base, resamples)
        if g is None:
            print(f"evidence: {name} shares no (seed, song) with the baseline and the oracle: no gap closed")
        else:
            row.update({"gap_closed": g["ratio"], "gap_closed_ci95": g["ci95"] or NO_CI, "oracle_gap_db": g["gap_db"],
                        "gap_flag": g["flag"]})
    return row


def summarize(rows_by_preset: dict[str, dict], resamples: int = 1000) -> dict:
    """rows_by_preset: preset -> {"tables": set -> per-song table, "filters": set -> filter.json, "clean_share": x}."""
    out = {}
    for preset, d in rows_by_preset.items():
        tables = d["tables"]
        if "baseline" not in tables:
            raise ValueError(f"evidence: {preset} has no baseline set: nothing to compare with")
        base, oracle = tables["baseline"], tables.get("oracle")
        rows = []
        for name, table in tables.items():
            row = set_row(name, table, base, oracle, resamples)
            f = d["filters"].get(name) or {}
            row["kept_songs"] = f.get("cleaned_songs")
            row["ratio"] = f.get("ratio")
            row["clean_share"] = 1.0 if name in ("oracle", "reference") else (
                f.get("clean_share") if f else (d["clean_share"] if name == "baseline" else None))
            row["clean_kept"] = f.get("clean_kept")
            rows.append(row)
        cleaned = [r for r in rows if r["set"] not in FIXED and r.get("delta_db") is not None]
        best = lambda rs: max(rs, key=lambda r: r["delta_db"])["set"] if rs else None  # noqa: E731
        out[preset] = {"sets": rows, "best_overall": best(cleaned),
                       "best_blind": best([r for r in cleaned if r["set"].split("@")[0] in BLIND]),
                       "best_chosen_on": BEST_CHOSEN_ON}
    return out


def markdown(summary: dict, preset: str) -> str:
    """A README table: SDR ± seeds, utterance SDR, Δ [95% CI] and gap closed [CI] (seeds and songs), clean share."""
    head = ("| set | SDR (dB) ± seeds | utt. SDR | Δ vs baseline [95% CI] | gap closed [95% CI] | pairs | r |"
            " kept clean share | clean songs kept |\n|---|---|---|---|---|---|---|---|---|")
    fmt = lambda x, p="+.2f": "—" if x is None else format(x, p)  # noqa: E731
    ci = lambda c, p="+.2f": "" if c is None or c[0] is None else f" [{fmt(c[0], p)}, {fmt(c[1], p)}]"  # noqa: E731
    lines = [head]
    for r in summary[preset]["sets"]:
        std = "" if r["sdr_std"] is None else f" ± {r['sdr_std']:.2f}"
        d = "—" if r.get("delta_db") is None else f"{fmt(r['delta_db'])}{ci(r['delta_ci95'])}"
        g = "—" if r.get("gap_closed") is None else (
            f"{fmt(r['gap_closed'], '.2f')}{ci(r['gap_closed_ci95'], '.2f')}" + (" (unbounded)" if r.get("gap_flag") else ""))
        lines.append(f"| {r['set']} | {r['sdr']:.2f}{std} | {r['sdr_utt']:.2f} | {d} | {g} | {r.get('pairs') or '—'} | "
                     f"{fmt(r.get('ratio'), '.2f')} | {fmt(r.get('clean_share'), '.2f')} | {fmt(r.get('clean_kept'), '.2f')} |")
    return "\n".join(lines)


def collect(exps: list[Experiment], revs: dict[str, str], read=_git_file) -> dict[str, dict]:
    """Every finished experiment's sets by preset; one not finished (with the planned identity) is one line, and
    its sets are left out."""
    by_preset: dict[str, dict] = {}
    for e in exps:
        if e.name not in revs:
            print(f"evidence: {e.name} has not finished with this code, params and data: sets {', '.join(e.sets)} left out "
                  "(run `make evidence`)")
            continue
        tables, flt, cont = read_experiment(e, revs[e.name], read)
        d = by_preset.setdefault(e.preset, {"tables": {}, "filters": {}, "clean_share": None})
        for s, t in tables.items():
            key = f"{e.cleaner}@{e.ratio}" if s == "cleaned" else s
            d["tables"][key] = t
            if s == "cleaned":
                d["filters"][key] = flt
        if cont.get("songs"):
            d["clean_share"] = round(cont.get("songs_clean", 0) / cont["songs"], 4)
    return by_preset


def write(summary: dict, meta: dict) -> None:
    TABLES.mkdir(parents=True, exist_ok=True)
    for preset, d in summary.items():
        rows = pd.DataFrame([{k: v for k, v in r.items() if not isinstance(v, list)} |  # intervals: _lo, _hi
                             {f"{k}_lo": v[0] for k, v in r.items() if isinstance(v, list)} |
                             {f"{k}_hi": v[1] for k, v in r.items() if isinstance(v, list)} for r in d["sets"]])
        tmp = TABLES / f".{preset}.csv.tmp"
        rows.to_csv(tmp, index=False)
        tmp.replace(TABLES / f"{preset}.csv")
    tmp = OUT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({**meta, "presets": summary}, indent=2) + "\n")
    tmp.replace(OUT)


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"GPU ({torch.cuda.get_device_name(0)})"
    import os
    return f"CPU ({os.cpu_count()} cores)"


def run(params: dict, scale: str | None = None, collect_only: bool = False) -> dict:
    t0 = time.perf_counter()
    sname, sc, exps = plan(params, scale)
    if not collect_only:
        run_grid(exps, sc.jobs)
    revs, _ = finished(exps)
    summary = summarize(collect(exps, revs), int((params.get("evidence") or {}).get("resamples", 1000)))
    meta = {"scale": sname, "where": device_name(), "wall_s": round(time.perf_counter() - t0, 1),
            "steps_per_target": sc.steps_per_target, "seeds": sc.seeds, "test_songs": sc.test_songs,
            "experiments": [e.name for e in exps], "commits": {e.name: revs.get(e.name) for e in exps},
            "intervals": "95 %, over seeds and songs (generalized pivot; stemsift/separate/paired.py)"}
    if collect_only and OUT.is_file():  # keep the wall time of the run that trained
        meta["wall_s"] = json.loads(OUT.read_text()).get("wall_s", meta["wall_s"])
    write(summary, meta)
    for preset in summary:
        print(f"\n{preset} ({sname}: {sc.steps_per_target} steps per target, seeds {sc.seeds}, {sc.test_songs} test songs, "
              f"{meta['where']}, {meta['wall_s'] / 60:.0f} min)")
        print(markdown(summary, preset))
        print(f"best blind: {summary[preset]['best_blind']}, best overall: {summary[preset]['best_overall']} "
              f"(chosen on {BEST_CHOSEN_ON})")
    return summary
