"""Detection quality of a cleaner's scores against the simulated truth (never seen by the cleaner):
ROC-AUC and average precision for "stem / song is defective" per defect type, and the clean share kept at r."""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from stemsift.clean.select import keep_top


def _auc_ap(defective: np.ndarray, score: np.ndarray) -> tuple[float | None, float | None]:
    if defective.all() or not defective.any():
        return None, None
    s = -np.asarray(score)  # low score = likely defective
    return round(float(roc_auc_score(defective, s)), 4), round(float(average_precision_score(defective, s)), 4)


def song_truth(truth: pd.DataFrame) -> pd.Series:
    """Per song: 'clean' or its defect (a song carries one defect type)."""
    bad = truth[truth.defect != "clean"].groupby("track_id").defect.first()
    return pd.Series({t: bad.get(t, "clean") for t in sorted(set(truth.track_id))}, dtype=object)


def detection(scores: pd.DataFrame, truth: pd.DataFrame, ratios: list[float]) -> dict:
    """Per-stem and per-song AUC / AP, overall and per defect type (and per label-noise kind), plus the
    share of kept songs that are clean ('clean_share', the paper's % clean) and of clean songs kept."""
    stems = scores.merge(truth[["track_id", "label", "defect", "kind"]], on=["track_id", "label"], how="left")
    stems["defect"] = stems.defect.fillna("clean")
    out: dict = {"stem_auc": {}, "stem_ap": {}, "song_auc": {}, "song_ap": {}}
    groups = {"all": stems.defect != "clean"}
    groups.update({d: stems.defect == d for d in sorted(set(stems.defect) - {"clean"})})
    groups.update({k: stems.kind == k for k in sorted(set(stems.kind.dropna()) - {"", "bleeding"})})
    for name, pos in groups.items():
        mask = (stems.defect == "clean") | pos
        auc, ap = _auc_ap(pos[mask].to_numpy(), stems.score[mask].to_numpy())
        out["stem_auc"][name], out["stem_ap"][name] = auc, ap
    songs = stems.groupby("track_id").song_score.first()
    kind = song_truth(truth).reindex(songs.index).fillna("clean")
    for name in ["all"] + sorted(set(kind) - {"clean"}):
        pos = (kind != "clean") if name == "all" else (kind == name)
        mask = (kind == "clean") | pos
        auc, ap = _auc_ap(pos[mask].to_numpy(), songs[mask].to_numpy())
        out["song_auc"][name], out["song_ap"][name] = auc, ap
    clean = set(kind[kind == "clean"].index)
    for r in ratios:
        kept = keep_top(songs, float(r))
        out[f"clean_share@{r:g}"] = round(len(kept & clean) / len(kept), 4)
        out[f"clean_kept@{r:g}"] = round(len(kept & clean) / max(len(clean), 1), 4)
    out["clean_share@1"] = round(len(clean) / len(songs), 4)
    return out
