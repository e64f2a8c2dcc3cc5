"""`stemsift sweep`: collect the experiments of a cleaner x keep-ratio sweep (from `dvc exp show --json`)
into metrics/sweep.csv and one CSV per cleaner under metrics/sweep/, which dvc.yaml plots as SDR and
detection AUC versus r (`dvc plots show`)."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pandas as pd

OUT = Path("metrics/sweep.csv")
EVIDENCE_NAME = re.compile(r"^ev[0-9a-f]{6}-")
PER_CLEANER = Path("metrics/sweep")
COLUMNS = ["experiment", "cleaner", "variant", "ratio", "mode", "seeds", "song_auc", "stem_auc", "clean_share", "clean_kept",
           "sdr_cleaned", "sdr_baseline", "sdr_oracle", "gain_db", "gap_closed"]


def _entries(exp_show: list):
    """Yield (experiment name, data) for every finished experiment in dvc's `exp show --json` output."""
    for commit in exp_show or []:
        for exp in commit.get("experiments") or []:
            if (exp.get("executor") or {}).get("state") not in (None, "success"):
                continue  # queued or running: its metrics are still the parent commit's
            for rev in exp.get("revs") or []:
                data = rev.get("data")
                if isinstance(data, dict) and data.get("metrics") and not rev.get("error"):
                    yield rev.get("name") or exp.get("name") or str(rev.get("rev", ""))[:7], data


def row(name: str, data: dict) -> dict | None:
    params = data.get("params", {}).get("params.yaml", {}).get("data", {})
    metrics = {p: m.get("data", {}) for p, m in data.get("metrics", {}).items()}
    sep, flt, det = (metrics.get(f"metrics/{f}.json", {}) for f in ("separation", "filter", "cleaning"))
    cleaner = params.get("score", {}).get("cleaner")
    if not sep or not cleaner:
        return None
    d = det.get(cleaner, {})
    block = (params.get("cleaners") or {}).get(cleaner)
    variant = block.get("mode") if isinstance(block, dict) else None
    return {"experiment": name, "cleaner": cleaner, "variant": variant, "ratio": params.get("filter", {}).get("ratio"),
            "mode": params.get("filter", {}).get("mode"), "seeds": len(params.get("train", {}).get("seeds", [])),
            "song_auc": d.get("song_auc", {}).get("all"),
            "stem_auc": d.get("stem_auc", {}).get("all"), "clean_share": flt.get("clean_share"),
            "clean_kept": flt.get("clean_kept"), "sdr_cleaned": sep.get("cleaned", {}).get("sdr_avg"),
            "sdr_baseline": sep.get("baseline", {}).get("sdr_avg"), "sdr_oracle": sep.get("oracle", {}).get("sdr_avg"),
            "gain_db": sep.get("gain_db"), "gap_closed": sep.get("gap_closed")}


def collect(exp_show: list) -> pd.DataFrame:
    # `make evidence` experiments evaluate only their own sets: their separation.json is the parent's, never a row
    rows = [r for name, data in _entries(exp_show) if not EVIDENCE_NAME.match(name) and (r := row(name, data))]
    table = pd.DataFrame(rows, columns=COLUMNS).drop_duplicates(subset=["cleaner", "variant", "ratio", "mode", "seeds"], keep="first")
    return table.sort_values(["cleaner", "variant", "mode", "ratio"], na_position="first").reset_index(drop=True)


def _exp_show() -> list:
    out = subprocess.run(["dvc", "exp", "show", "--json", "--all-commits"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


DETECTION = Path("metrics/detection")


def detection(exp_show: list | None = None, out: Path = DETECTION) -> dict[str, dict]:
    """The newest finished experiment's metrics/cleaning.json per contamination preset -> out/<preset>.json:
    every cleaner's detection on every preset `make detect` ran (`dvc exp show` has the same columns)."""
    found: dict[str, dict] = {}
    for name, data in _entries(exp_show if exp_show is not None else _exp_show()):
        preset = data.get("params", {}).get("params.yaml", {}).get("data", {}).get("contaminate", {}).get("preset")
        cleaning = data.get("metrics", {}).get("metrics/cleaning.json", {}).get("data")
        if preset and cleaning and preset not in found:
            found[preset] = {"experiment": name, "preset": preset, "cleaners": cleaning}
    if not found:
        raise ValueError("no finished experiment with metrics/cleaning.json (run `make detect` first)")
    out.mkdir(parents=True, exist_ok=True)
    for preset, d in found.items():
        (out / f"{preset}.json").write_text(json.dumps(d, indent=2) + "\n")
        aucs = {c: (m.get("song_auc") or {}).get("all") for c, m in d["cleaners"].items()}
        print(f"{preset:8s} ({d['experiment']}): " + ", ".join(f"{c} {a:.3f}" for c, a in aucs.items() if a is not None))
    return found


def run(exp_show: list | None = None) -> pd.DataFrame:
    if exp_show is None:
        exp_show = _exp_show()
    table = collect(exp_show)
    if table.empty:
        raise ValueError("no finished experiment with metrics/separation.json and score.cleaner (run a sweep first)")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(OUT, index=False)
    PER_CLEANER.mkdir(parents=True, exist_ok=True)
    for old in PER_CLEANER.glob("*.csv"):
        old.unlink()
    for cleaner, g in table.groupby("cleaner"):
        g.to_csv(PER_CLEANER / f"{cleaner}.csv", index=False)
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(table.to_string(index=False))
    return table
