"""Cost of the curate-only pipeline (curate/dvc.yaml) against the number of songs: wall seconds and peak RSS per stage,
DVC's own share (hashing the input folder and every output, committing them to its cache, the lock file), and each
stage's fitted exponent of cost against N (least squares of log seconds on log N; 1 = linear).

    python bench/bench_scale.py [--sizes 125 250 500 1000] [--duration 20] [--stereo 125] [--ray] [--one-process]

Each N: the default synthetic songs (`stemsift prepare`, all train, `--duration` s) rendered into a folder, a fresh
git+DVC copy of this repository, then every stage of curate/dvc.yaml run alone (`dvc repro -s <stage>`) in order, in a
child process whose peak RSS (its whole process tree: dvc and the stage) is read from getrusage. Wall = what
`dvc repro` took; stage = the stage's own seconds (curate/metrics/cost/<stage>.json); overhead = the difference: DVC
(hashing the folder and the outputs, committing them to its cache, the lock file) plus the stage process's start
and imports (a few seconds, constant in N: at large N the overhead's growth is DVC's).
`--stereo N`: one more point at 44.1 kHz stereo (rendered and curated at that rate). `--ray`: at the largest N, embed and
score again with `compute.executor: ray` (a private local Ray instance: one worker per core) beside the default run;
`--one-process`: the same with `compute.workers: 1` (the in-process loop instead of the local worker pool).
Writes metrics/bench/scale.json and metrics/bench/scale.md (the table).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STAGES = ("prepare", "embed", "score", "select", "filter", "audit", "listen", "catalogue", "export")
AGAIN_STAGES = ("embed", "score")  # the stages whose per-item work the `compute` executor runs
AGAIN = {"ray": {"compute.executor": "ray"}, "one_process": {"compute.workers": 1}}
AGAIN_LABELS = {"ray": "Ray (`compute.executor: ray`, private local instance)",
                "one_process": "one process (`compute.workers: 1`)"}
DEFAULT_COMPUTE = {f"compute.{k}": v for k, v in yaml.safe_load((REPO / "params.yaml").read_text())["compute"].items()}
# peak RSS (KiB) of the child's whole tree: Linux reports the largest reaped descendant in RUSAGE_CHILDREN
PEAK = ("import json, resource, subprocess, sys, time; t = time.perf_counter(); rc = subprocess.call(sys.argv[2:]); "
        "open(sys.argv[1], 'w').write(json.dumps({'rc': rc, 'wall': time.perf_counter() - t, "
        "'kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss})); sys.exit(rc)")


def env(cache: Path) -> dict:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
            "STEMSIFT_CACHE": str(cache), "STEMSIFT_PROGRESS": "off", "GIT_AUTHOR_NAME": "bench",
            "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@b"}


def sh(cmd: list[str] | str, cwd: Path, environ: dict) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=environ, capture_output=True, text=True, shell=isinstance(cmd, str))
    if out.returncode:
        raise SystemExit(f"bench_scale: {cmd} failed in {cwd}:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return out.stdout


def render(folder: Path, songs: int, duration: float, rate: int, channels: int, environ: dict) -> float:
    """The default synthetic songs, all in train/, as a MUSDB18-HQ-layout folder; returns the seconds it took."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(out=str(folder), sample_rate=rate, channels=channels, format="wav")
    params["data"]["synthetic"].update(duration=duration, tracks={"train": songs, "reference": 0, "test": 0})
    path = folder.parent / f"{folder.name}.params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    t0 = time.perf_counter()
    sh([str(BIN / "stemsift"), "prepare", "--params", str(path)], folder.parent, environ)
    return time.perf_counter() - t0


def repo_copy(dst: Path, environ: dict) -> Path:
    """A fresh git+DVC repository holding this one's pipelines, code and params: an empty DVC cache, like a clone."""
    dst.mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml", "src", ".gitignore", "verdicts"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, dst / name,
                                                                     **({"ignore": shutil.ignore_patterns("__pycache__")} if (REPO / name).is_dir() else {}))
    (dst / "curate").mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / "curate" / name, dst / "curate" / name)
    sh("git init -q && dvc init -q && dvc config core.analytics false && git add -A && git commit -qm init", dst, environ)
    return dst


def set_params(path: Path, overrides: dict) -> None:
    """Dotted keys into the curate params file (its comments kept)."""
    from ruamel.yaml import YAML

    y = YAML()
    doc = y.load(path.read_text())
    for dotted, value in overrides.items():
        *parents, key = dotted.split(".")
        node = doc
        for p in parents:
            node = node.setdefault(p, {})
        node[key] = value
    with path.open("w") as f:
        y.dump(doc, f)


def run_stage(ws: Path, stage: str, environ: dict, force: bool = False) -> dict:
    """`dvc repro -s <stage>` in a child measuring its tree; wall, peak MB, the stage's own seconds, the rest."""
    probe = ws / f".bench-{stage}.json"
    out = subprocess.run([sys.executable, "-c", PEAK, str(probe), "dvc", "repro", "-s", *(["-f"] if force else []), stage],
                         cwd=ws, env=environ, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"bench_scale: dvc repro -s {stage} failed in {ws}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    m = json.loads(probe.read_text())
    probe.unlink()
    cost = ws / "metrics/cost" / f"{stage}.json"
    own = json.loads(cost.read_text())["seconds"] if cost.is_file() else None
    return {"wall_s": round(m["wall"], 2), "peak_mb": round(m["kib"] / 1024, 1), "stage_s": own,
            "overhead_s": round(m["wall"] - own, 2) if own is not None else None}


def curate_point(root: Path, songs: int, duration: float, rate: int, channels: int, again: dict) -> dict:
    """Render, copy the repository, run every curate stage alone; then embed + score again under each of ``again``
    (name -> compute overrides, e.g. Ray, or one process) beside the default run."""
    tag = f"n{songs}-{rate}-{channels}ch"
    environ = env(root / f"cache-{tag}")
    source = root / f"songs-{tag}"
    render_s = render(source, songs, duration, rate, channels, environ)
    repo = repo_copy(root / f"repo-{tag}", environ)
    ws = repo / "curate"
    set_params(ws / "params.yaml", {"data.source": str(source), "data.sample_rate": rate, "data.channels": channels})
    point = {"songs": songs, "duration_s": duration, "sample_rate": rate, "channels": channels,
             "render_s": round(render_s, 1), "stages": {}}
    print(f"\n{tag}: {songs} songs of {duration:g} s rendered in {render_s:.0f} s", flush=True)
    for stage in STAGES:
        point["stages"][stage] = r = run_stage(ws, stage, environ)
        print(f"  {stage:10s} {r['wall_s']:8.1f} s  (stage {r['stage_s'] if r['stage_s'] is not None else '-':>7}, "
              f"overhead {r['overhead_s'] if r['overhead_s'] is not None else '-':>6})  peak {r['peak_mb']:7.0f} MB", flush=True)
    point["total_s"] = round(sum(r["wall_s"] for r in point["stages"].values()), 1)
    point["filter"] = json.loads((ws / "metrics/filter.json").read_text())
    for name, overrides in again.items():
        set_params(ws / "params.yaml", overrides)
        # nothing memoised from the default run
        alt = {**environ, "STEMSIFT_CACHE": str(root / f"cache-{tag}-{name}")}
        point[name] = {}
        for stage in AGAIN_STAGES:
            point[name][stage] = r = run_stage(ws, stage, alt, force=True)
            print(f"  {name} {stage:6s} {r['wall_s']:8.1f} s  (stage {r['stage_s']:>7}, overhead {r['overhead_s']:>6})  "
                  f"peak {r['peak_mb']:7.0f} MB", flush=True)
        set_params(ws / "params.yaml", {k: DEFAULT_COMPUTE[k] for k in overrides})
    return point


def exponent(ns: list[int], ys: list[float]) -> float | None:
    """Slope of log y on log N (least squares); None with fewer than two sizes or a zero cost."""
    if len(set(ns)) < 2 or min(ys) <= 0:
        return None
    return round(float(np.polyfit(np.log(ns), np.log(ys), 1)[0]), 3)


def fit(points: list[dict]) -> dict:
    ns = [p["songs"] for p in points]
    out = {}
    for stage in STAGES:
        rows = [p["stages"][stage] for p in points]
        out[stage] = {"wall": exponent(ns, [r["wall_s"] for r in rows]), "peak_mb": exponent(ns, [r["peak_mb"] for r in rows]),
                      "stage": exponent(ns, [r["stage_s"] for r in rows]) if all(r["stage_s"] for r in rows) else None,
                      "overhead": exponent(ns, [r["overhead_s"] for r in rows]) if all(r["overhead_s"] for r in rows) else None}
    out["total"] = {"wall": exponent(ns, [p["total_s"] for p in points])}
    return out


def markdown(result: dict) -> str:
    mono, fits = result["mono"], result["exponents"]
    ns = [p["songs"] for p in mono]
    head = "| stage | " + " | ".join(f"N={n} s (overhead) / MB" for n in ns) + " | exponent s | exponent MB |"
    lines = [head, "|" + "---|" * (len(ns) + 3)]
    for stage in STAGES:
        cells = []
        for p in mono:
            r = p["stages"][stage]
            over = f" ({r['overhead_s']:.1f})" if r["overhead_s"] is not None else ""
            cells.append(f"{r['wall_s']:.1f}{over} / {r['peak_mb']:.0f}")
        f = fits[stage]
        lines.append(f"| {stage} | " + " | ".join(cells) + f" | {f['wall'] if f['wall'] is not None else '-'} | "
                     f"{f['peak_mb'] if f['peak_mb'] is not None else '-'} |")
    lines.append("| **total** | " + " | ".join(f"**{p['total_s']:.1f}**" for p in mono)
                 + f" | {fits['total']['wall'] if fits['total']['wall'] is not None else '-'} | |")
    text = [f"Curate-only pipeline, {mono[0]['duration_s']:g} s songs at {mono[0]['sample_rate']} Hz, "
            f"{mono[0]['channels']} channel(s); wall seconds of `dvc repro -s <stage>` (in brackets: outside the stage's own "
            "timing: DVC's hashing and cache commit, process start and imports) / "
            "peak RSS MB of dvc and the stage; exponent: slope of log cost on log N.", "", *lines]
    for p in result.get("stereo", []):
        text += ["", f"{p['sample_rate']} Hz, {p['channels']} channels, N={p['songs']}: total {p['total_s']:.1f} s; "
                 + ", ".join(f"{s} {r['wall_s']:.1f} s / {r['peak_mb']:.0f} MB" for s, r in p["stages"].items())]
    for name, what in AGAIN_LABELS.items():
        if (alt := mono[-1].get(name)):
            text += ["", f"N={mono[-1]['songs']}, default vs {what}: "
                     + ", ".join(f"{s} {mono[-1]['stages'][s]['wall_s']:.1f} s vs {r['wall_s']:.1f} s" for s, r in alt.items())]
    return "\n".join(text) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[125, 250, 500, 1000], help="songs per point")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per song")
    ap.add_argument("--stereo", type=int, default=125, help="songs of the 44.1 kHz stereo point (0: none)")
    ap.add_argument("--ray", action="store_true", help="embed and score on Ray too at the largest N")
    ap.add_argument("--one-process", action="store_true",
                    help="embed and score in one process too (compute.workers: 1) at the largest N")
    ap.add_argument("--workdir", help="where the songs and repository copies go (default: a temp folder, removed)")
    ap.add_argument("--out", default=str(REPO / "metrics/bench/scale.json"))
    args = ap.parse_args(argv)
    params = yaml.safe_load((REPO / "params.yaml").read_text())["data"]
    root = Path(args.workdir or tempfile.mkdtemp(prefix="stemsift-bench-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    partial = Path(args.out).with_suffix(".partial.json")  # each finished point, so a cut run keeps what it measured
    partial.parent.mkdir(parents=True, exist_ok=True)
    try:
        sizes = sorted(set(args.sizes))
        mono: list[dict] = []
        for n in sizes:
            again = {name: AGAIN[name] for name, on in (("ray", args.ray), ("one_process", args.one_process))
                     if on and n == sizes[-1]}
            mono.append(curate_point(root, n, args.duration, params["sample_rate"], params["channels"], again))
            partial.write_text(json.dumps({"mono": mono}, indent=2) + "\n")
        stereo = [curate_point(root, args.stereo, args.duration, 44100, 2, {})] if args.stereo else []
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)
    result = {"machine": {"cpus": os.cpu_count()}, "mono": mono, "stereo": stereo, "exponents": fit(mono)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table = markdown(result)
    for path, text in ((out, json.dumps(result, indent=2) + "\n"), (out.with_suffix(".md"), table)):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    partial.unlink(missing_ok=True)
    print("\n" + table)
    print(f"-> {out}, {out.with_suffix('.md')}")
    return result


if __name__ == "__main__":
    main()
