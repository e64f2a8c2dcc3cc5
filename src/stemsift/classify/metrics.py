"""Multi-label recognition metrics for Ψ, and the quality of refined labels against the simulated truth."""
from __future__ import annotations

import numpy as np

from stemsift import LABELS
from stemsift.classify.refine import f1


def recognition(probs: np.ndarray, targets: np.ndarray, thresholds: np.ndarray) -> dict:
    """Exact-match accuracy, per-class precision / recall / F1 and macro F1 (percent, 2 decimals)."""
    pred, true = probs >= thresholds[None], targets > 0.5
    out = {"n": int(len(pred)), "exact_match": round(100 * float((pred == true).all(1).mean()), 2)}
    f1s = []
    for i, c in enumerate(LABELS):
        tp = float((pred[:, i] & true[:, i]).sum())
        out[f"precision_{c}"] = round(100 * tp / max(float(pred[:, i].sum()), 1), 2)
        out[f"recall_{c}"] = round(100 * tp / max(float(true[:, i].sum()), 1), 2)
        f1s.append(100 * f1(pred[:, i], true[:, i]))
        out[f"f1_{c}"] = round(f1s[-1], 2)
    out["f1_macro"] = round(float(np.mean(f1s)), 2)
    return out


def refinement_quality(given: dict, refined: dict, true: dict, kinds: dict | None = None) -> dict:
    """Share of wrong given labels that refinement fixed (refined set == true set) and share of right ones it broke;
    per defect kind too. Only a simulated set can report this: the truth is read here and nowhere upstream."""
    keys = [k for k in given if k in true]
    wrong = [k for k in keys if given[k] != true[k]]
    right = [k for k in keys if given[k] == true[k]]
    out = {"stems": len(keys), "wrong_given": len(wrong),
           "wrong_fixed": round(100 * sum(refined[k] == true[k] for k in wrong) / max(len(wrong), 1), 2),
           "right_broken": round(100 * sum(refined[k] != true[k] for k in right) / max(len(right), 1), 2),
           "exact_after": round(100 * sum(refined[k] == true[k] for k in keys) / max(len(keys), 1), 2),
           "exact_before": round(100 * len(right) / max(len(keys), 1), 2)}
    for kind in sorted(set((kinds or {}).values()) - {"", "clean"}):
        ks = [k for k in wrong if kinds.get(k) == kind]
        if ks:
            out[f"wrong_fixed_{kind}"] = round(100 * sum(refined[k] == true[k] for k in ks) / len(ks), 2)
            # the given instrument is dropped from a bled / merged stem: the separator will not use it as target
            out[f"target_withheld_{kind}"] = round(100 * sum(refined[k] != given[k] for k in ks) / len(ks), 2)
    return out
