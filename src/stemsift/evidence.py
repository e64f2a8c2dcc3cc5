"""`make evidence`: the papers' Table 1 (`mixed`) and Table 2 (`effects`) analogues. One DVC experiment per
(preset, cleaner, keep ratio) of the `evidence.scale` grid, longer trainings and a larger clean test split, run
through `dvc exp run --queue`; then every set's per-song SDR is read back from its experiment's commit and compared
to the baseline's, song by song: paired differences with bootstrap intervals, gap closed, % clean kept.

Each experiment evaluates only the sets it owns (one experiment per preset the fixed sets, the others their
`cleaned` set): metrics files an experiment did not recompute are its parent commit's, never read. Names carry a
hash of the settings that decide a result, so a rerun skips experiments already finished (resumable), a grid can
grow without redoing them, and a changed training length never mixes with an old one."""
from __future__ import annotations

import hashlib
import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from stemsift.separate.paired import paired_delta, paired_ratio

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

    def command(self) -> list[str]:
        targets = [f"evaluate@{s}" for s in self.sets]
        return ["dvc", "exp", "run", "--queue", "-n", self.name, *sum((["-S", o] for o in self.overrides), []), *targets]


def _label(x) -> str:
    return str(x).replace(".", "")


def plan(params: dict, name: str | None = None) -> tuple[str, Scale, list[Experiment]]:
    """The experiments of one scale: per preset, one for the fixed sets and one per (cleaner, ratio). A name
    carries a hash of what decides its result (training length, seeds, test split, overrides), not of the grid:
    adding a cleaner or a ratio keeps every finished experiment."""
    sname, sc = scale_of(params, name)
    same = {k: getattr(sc, k) for k in ("steps_per_target", "steps_per_epoch", "seeds", "test_songs", "overrides")}
    tag = hashlib.sha1(json.dumps(same, sort_keys=True, default=str).encode()).hexdigest()[:6]
    epochs = sc.steps_per_target // sc.steps_per_epoch
    common = [f"data.synthetic.tracks.test={sc.test_songs}", f"train.seeds={json.dumps(sc.seeds, separators=(',', ':'))}",
              f"train.epochs={epochs}", f"train.steps_per_epoch={sc.steps_per_epoch}",
              f"train.patience={epochs}",  # the whole length: the table states it
              f"train.workers={sc.workers}", "train.labels=given", "train.method=supervised",
              *(f"{k}={json.dumps(v, separators=(',', ':')) if isinstance(v, (list, dict)) else v}"
                for k, v in sc.overrides.items())]
    exps = []
    for preset in sc.presets:
        exps.append(Experiment(f"ev{tag}-{preset}-{'-'.join(sc.fixed)}", preset, None, None, list(sc.fixed),
                               [f"contaminate.preset={preset}", *common]))
        for cleaner in sc.cleaners:
            for ratio in sc.ratios:
                exps.append(Experiment(f"ev{tag}-{preset}-{cleaner}-{_label(ratio)}", preset, cleaner, ratio, ["cleaned"],
                                       [f"contaminate.preset={preset}", f"score.cleaner={cleaner}",
                                        f"filter.ratio={ratio}", *common]))
    return sname, sc, exps


# ----------------------------------------------------------------------------- running
def _sh(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def finished() -> dict[str, str]:
    """Experiment name -> commit of every finished experiment: DVC writes refs/exps/<base>/<sha>/<name> only for an
    experiment that succeeded (a git read, polled every 2 s; `dvc exp show` costs seconds of CPU a call)."""
    out = {}
    for line in _sh(["git", "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps"]).splitlines():
        ref, commit = line.split()
        parts = ref.split("/")  # refs exps <2 hex> <38 hex> <name>; exec/ and celery/ refs are DVC's own
        if len(parts) == 5 and len(parts[2]) == 2:
            out[parts[4]] = commit
    return out


def _queue_busy() -> bool:
    return any(s in _sh(["dvc", "queue", "status"]) for s in ("Queued", "Running"))


def run_grid(exps: list[Experiment], jobs: int, status_s: float = 30.0) -> None:
    done = finished()
    todo = [e for e in exps if e.name not in done]
    for e in exps:
        print(f"{'done  ' if e.name in done else 'queued'} {e.name}: sets {', '.join(e.sets)}", flush=True)
    if not todo:
        return
    for e in todo:
        _sh(e.command())
    subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], check=True)
    # wait: the refs every 2 s (cheap); `dvc queue status` (~1.5 s of CPU) every status_s, to stop when one failed.
    # (`dvc exp run --run-all` follows the logs instead, but hung here after both experiments had succeeded.)
    last = time.monotonic()
    while not {e.name for e in todo} <= set(finished()):
        if time.monotonic() - last >= status_s:
            if not _queue_busy():
                break
            last = time.monotonic()
        time.sleep(2.0)
    failed = [e.name for e in todo if e.name not in finished()]
    if failed:
        raise RuntimeError(f"evidence: experiments failed: {', '.join(failed)} (dvc queue logs <name>)")


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


def set_row(name: str, table: pd.DataFrame, base: pd.DataFrame, oracle: pd.DataFrame | None, resamples: int) -> dict:
    s, utt = seed_means(table), table.groupby("seed").sdr_utt.mean()
    row = {"set": name, "sdr": round(float(s.mean()), 3),
           "sdr_std": round(float(s.std(ddof=1)), 3) if len(s) > 1 else None,  # sample std over seeds
           "sdr_utt": round(float(utt.mean()), 3), "seeds": int(len(s)),
           "songs": int(table.track_id.nunique())}
    if name != "baseline":
        d = paired_delta(table, base, resamples)
        row.update({"delta_db": d["delta_db"], "delta_ci95": d["ci95"], "pairs": d["pairs"]})
        if oracle is not None and name != "oracle":
            if (g := paired_ratio(table, oracle, base, resamples)) is not None:
                row.update({"gap_closed": g["ratio"], "gap_closed_ci95": g["ci95"]})
    return row


def summarize(rows_by_preset: dict[str, dict], resamples: int = 2000) -> dict:
    """rows_by_preset: preset -> {"tables": set -> per-song table, "filters": set -> filter.json, "clean_share": x}."""
    out = {}
    for preset, d in rows_by_preset.items():
        tables, base = d["tables"], d["tables"]["baseline"]
        oracle = tables.get("oracle")
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
        cleaned = [r for r in rows if r["set"] not in FIXED and "delta_db" in r]
        best = lambda rs: max(rs, key=lambda r: r["delta_db"])["set"] if rs else None  # noqa: E731
        out[preset] = {"sets": rows, "best_overall": best(cleaned),
                       "best_blind": best([r for r in cleaned if r["set"].split("@")[0] in BLIND])}
    return out


def markdown(summary: dict, preset: str) -> str:
    """A README table: SDR ± seeds, utterance SDR, paired Δ [95% CI], gap closed [CI], clean share / clean kept."""
    head = ("| set | SDR (dB) ± seeds | utt. SDR | Δ vs baseline [95% CI] | gap closed [95% CI] | r | kept clean share |"
            " clean songs kept |\n|---|---|---|---|---|---|---|---|")
    fmt = lambda x, p="+.2f": "—" if x is None else format(x, p)  # noqa: E731
    lines = [head]
    for r in summary[preset]["sets"]:
        std = "" if r["sdr_std"] is None else f" ± {r['sdr_std']:.2f}"
        d = f"{fmt(r.get('delta_db'))} [{fmt(r['delta_ci95'][0])}, {fmt(r['delta_ci95'][1])}]" if "delta_db" in r else "—"
        g = (f"{fmt(r['gap_closed'], '.2f')} [{fmt(r['gap_closed_ci95'][0], '.2f')}, {fmt(r['gap_closed_ci95'][1], '.2f')}]"
             if r.get("gap_closed") is not None else "—")
        lines.append(f"| {r['set']} | {r['sdr']:.2f}{std} | {r['sdr_utt']:.2f} | {d} | {g} | {fmt(r.get('ratio'), '.2f')} | "
                     f"{fmt(r.get('clean_share'), '.2f')} | {fmt(r.get('clean_kept'), '.2f')} |")
    return "\n".join(lines)


def collect(exps: list[Experiment], revs: dict[str, str], read=_git_file) -> dict[str, dict]:
    by_preset: dict[str, dict] = {}
    for e in exps:
        if e.name not in revs:
            raise ValueError(f"evidence: experiment {e.name} has not finished (run `make evidence`)")
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
        rows = pd.DataFrame([{k: v for k, v in r.items() if not isinstance(v, list)} |
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
    summary = summarize(collect(exps, finished()), int((params.get("evidence") or {}).get("resamples", 2000)))
    meta = {"scale": sname, "where": device_name(), "wall_s": round(time.perf_counter() - t0, 1),
            "steps_per_target": sc.steps_per_target, "seeds": sc.seeds, "test_songs": sc.test_songs,
            "experiments": [e.name for e in exps]}
    if collect_only and OUT.is_file():  # keep the wall time of the run that trained
        meta["wall_s"] = json.loads(OUT.read_text()).get("wall_s", meta["wall_s"])
    write(summary, meta)
    for preset in summary:
        print(f"\n{preset} ({sname}: {sc.steps_per_target} steps per target, seeds {sc.seeds}, {sc.test_songs} test songs, "
              f"{meta['where']}, {meta['wall_s'] / 60:.0f} min)")
        print(markdown(summary, preset))
        print(f"best blind: {summary[preset]['best_blind']}, best overall: {summary[preset]['best_overall']}")
    return summary
