"""Keep-ratio selection from cleaner scores, as Blind'25 section 2.1: `unified` ranks songs by their mean
score and drops the bottom 1 - r for every target model; `per_target` ranks songs once per target by the
score of the stem carrying that label and drops the bottom 1 - r for that target's model only."""
from __future__ import annotations

import pandas as pd

from stemsift import LABELS
from stemsift.separate.selection import drop_tracks


def keep_count(n: int, ratio: float) -> int:
    return min(n, max(1, int(round(ratio * n))))


def keep_top(song_scores: pd.Series, ratio: float) -> set[str]:
    """The round(r N) best songs; ties broken by track id so the choice is deterministic."""
    order = song_scores.rename("s").reset_index().sort_values(["s", "track_id"], ascending=[False, True])
    return set(order.track_id.iloc[:keep_count(len(order), ratio)])


def kept_songs(scores: pd.DataFrame, ratio: float, mode: str) -> dict[str, set[str]]:
    """Songs kept per target model from a scores table (track_id, label, score, song_score)."""
    if mode == "unified":
        keep = keep_top(scores.groupby("track_id").song_score.first(), ratio)
        return {t: keep for t in LABELS}
    if mode == "per_target":
        return {t: keep_top(scores[scores.label == t].set_index("track_id").score, ratio) for t in LABELS}
    raise ValueError(f"unknown filter mode {mode!r} (use unified or per_target)")


def filtered_selection(baseline: pd.DataFrame, scores: pd.DataFrame, ratio: float, mode: str) -> pd.DataFrame:
    """The baseline selection with the dropped songs unkept, per target model."""
    songs = set(scores.track_id)
    sel = baseline
    for t, keep in kept_songs(scores, ratio, mode).items():
        sel = drop_tracks(sel, songs - keep, targets=(t,))
    return sel
