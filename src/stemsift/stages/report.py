"""Stage `report`: the papers' comparison table in metrics/separation.json — SDR per training set, the gain
of cleaned over baseline, and the share of the baseline -> oracle gap that cleaning closed."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from stemsift.params import TRAIN_SETS
from stemsift.separate.paired import paired_delta
from stemsift.separate.evaluate import EVAL_DIR
from stemsift.stemset import atomic_file

OUT = Path("metrics/separation.json")
KEEP = ("sdr_avg", "sdr_avg_std", "sdr_vocals", "sdr_bass", "sdr_drums", "sdr_other", "sdr_utt_avg",
        "method", "sdr_oraclemap_avg", "si_snri", "si_snr_single")  # the last four: MixIT runs only


def compare(results: dict[str, dict]) -> dict:
    out = {name: {k: r[k] for k in KEEP if k in r} for name, r in results.items()}
    base, clean, oracle = (results.get(n, {}).get("sdr_avg") for n in ("baseline", "cleaned", "oracle"))
    if base is not None and clean is not None:
        out["gain_db"] = round(clean - base, 3)
    refined = results.get("refined", {}).get("sdr_avg")
    if base is not None and refined is not None:
        out["gain_refined_db"] = round(refined - base, 3)
    if base is not None and oracle is not None:
        out["oracle_gap_db"] = round(oracle - base, 3)
        # share of the baseline -> oracle gap closed by cleaning (Blind'25 headline); undefined without a gap
        gap = oracle - base
        out["gap_closed"] = round((clean - base) / gap, 3) if clean is not None and abs(gap) > 1e-6 else None
        out["gap_closed_refined"] = round((refined - base) / gap, 3) if refined is not None and abs(gap) > 1e-6 else None
    return out


COST = Path("metrics/cleaning_cost.json")


def _seconds(path: str, key: str = "seconds") -> float:
    p = Path(path)
    return float(json.loads(p.read_text()).get(key) or 0.0) if p.is_file() else 0.0


def cleaning_cost(cleaner: str) -> dict:
    """The whole cleaning pipeline — baseline training, embedding, the chosen cleaner (and its components),
    the filter, the retraining — in seconds and as a multiple of one baseline training (per seed)."""
    base = _seconds("metrics/train/baseline.json", "seconds_per_run")
    cleaning = json.loads(Path("metrics/cleaning.json").read_text()) if Path("metrics/cleaning.json").is_file() else {}
    needed, todo = [], [cleaner]
    while todo:  # the cleaner and, for fusion cleaners, everything they fuse
        c = todo.pop()
        if c in cleaning and c not in needed:
            needed.append(c)
            todo += list(cleaning[c].get("components") or [])
    parts = {"baseline_train_s": base, "embed_s": _seconds("metrics/cost/embed.json"),
             "score_s": sum(float(cleaning[c].get("seconds", 0.0)) for c in needed),
             "filter_s": _seconds("metrics/cost/filter.json"),
             "cleaned_train_s": _seconds("metrics/train/cleaned.json", "seconds_per_run")}
    total = sum(parts.values())
    return {"cleaner": cleaner, "cleaners_counted": needed, **{k: round(v, 1) for k, v in parts.items()},
            "total_s": round(total, 1), "x_baseline": round(total / base, 2) if base else None}


def run(params: dict) -> dict:
    results = {n: json.loads((EVAL_DIR / f"{n}.json").read_text()) for n in TRAIN_SETS if (EVAL_DIR / f"{n}.json").is_file()}
    table = compare(results)
    cleaner = (params.get("score") or {}).get("cleaner", "none")
    if cleaner != "none":
        cost = cleaning_cost(cleaner)
        with atomic_file(COST) as tmp:
            tmp.write_text(json.dumps(cost, indent=2) + "\n")
        print(f"cleaning pipeline ({cleaner}): {cost['total_s']:.0f} s = {cost['x_baseline']}x one baseline training")
    base_csv = EVAL_DIR / "baseline.csv"
    if base_csv.is_file():  # each set against the baseline, song by song: mean difference and its 95% interval
        base = pd.read_csv(base_csv)
        paired = {n: paired_delta(pd.read_csv(EVAL_DIR / f"{n}.csv"), base) for n in results
                  if n != "baseline" and (EVAL_DIR / f"{n}.csv").is_file()}
        table["paired_vs_baseline"] = {n: p for n, p in paired.items() if p is not None}
    with atomic_file(OUT) as tmp:
        tmp.write_text(json.dumps(table, indent=2) + "\n")
    print(f"{'set':10s} {'SDR avg':>8s} {'± seeds':>8s}  vocals   bass  drums  other   paired Δ vs baseline [95% CI]")
    for n in results:
        r = table[n]
        std = r.get("sdr_avg_std")
        print(f"{n:10s} {r['sdr_avg']:8.2f} {'—' if std is None else f'{std:.2f}':>8s}  " +
              " ".join(f"{r[f'sdr_{x}']:6.2f}" for x in ("vocals", "bass", "drums", "other")) +
              (f"   {p['delta_db']:+.2f} [{p['ci95'][0]:+.2f}, {p['ci95'][1]:+.2f}] over {p['pairs']} song-seed pairs"
               if (p := table.get("paired_vs_baseline", {}).get(n)) else ""))
    print("± = sample std over seeds (ddof 1); paired Δ: on the SDR column's statistic, 95% interval with seeds and "
          "songs as crossed random factors (stemsift.separate.paired)")
    for k in ("gain_db", "gain_refined_db", "oracle_gap_db", "gap_closed", "gap_closed_refined"):
        if k in table:
            print(f"{k}: {table[k]}")
    return table
