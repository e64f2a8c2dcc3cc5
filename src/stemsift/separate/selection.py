"""Selections: which stem may be drawn for which target model, and in which role. Files are never deleted.

A selection row ``(track_id, label, target, role, keep)`` says whether the stem ``(track_id, label)`` may be
drawn while training the model for ``target``: as the **target** signal (``role='target'``) or as one of the
**interferers** summed into the mixture (``role='interferer'``). The sampler for target ``t`` draws the target
from the kept ``(target=t, role='target')`` rows and, for every other label ``u``, one interferer from the kept
``(target=t, role='interferer', label=u)`` rows.
"""
from __future__ import annotations

import pandas as pd

from stemsift import LABELS

COLUMNS = {"track_id": "string", "label": "string", "target": "string", "role": "string", "keep": "bool"}
ROLES = ("target", "interferer")


class SelectionError(ValueError):
    pass


def given_selection(stems: pd.DataFrame, tracks: list[str] | None = None) -> pd.DataFrame:
    """Trust the given labels: a stem labelled t is target for model t and an interferer for every other model."""
    s = stems if tracks is None else stems[stems.track_id.isin(tracks)]
    rows = [(r.track_id, r.label, t, "target" if r.label == t else "interferer", True)
            for r in s.itertuples() for t in LABELS]
    return typed(pd.DataFrame(rows, columns=list(COLUMNS)))


def typed(sel: pd.DataFrame) -> pd.DataFrame:
    missing = set(COLUMNS) - set(sel.columns)
    if missing:
        raise SelectionError(f"selection lacks columns {sorted(missing)}")
    sel = sel[list(COLUMNS)].astype(COLUMNS)
    bad = set(sel.role) - set(ROLES)
    if bad:
        raise SelectionError(f"unknown selection role {sorted(bad)[0]!r} (use {', '.join(ROLES)})")
    unknown = set(sel.target) - set(LABELS)
    if unknown:
        raise SelectionError(f"unknown selection target {sorted(unknown)[0]!r}")
    return sel.sort_values(["target", "role", "track_id", "label"]).reset_index(drop=True)


def drop_tracks(sel: pd.DataFrame, tracks: set[str], targets: tuple[str, ...] = LABELS) -> pd.DataFrame:
    """Unkeep every row of the given songs for the given target models (unified filtering: all targets)."""
    out = sel.copy()
    out.loc[out.track_id.isin(tracks) & out.target.isin(targets), "keep"] = False
    return out


def pools(sel: pd.DataFrame, target: str) -> tuple[list[tuple[str, str]], dict[str, list[tuple[str, str]]]]:
    """(target pool, interferer pool per other label) of (track_id, label) for one target model."""
    kept = sel[(sel.target == target) & sel.keep]
    tgt = kept[kept.role == "target"]
    itf = kept[kept.role == "interferer"]
    return (list(zip(tgt.track_id, tgt.label)),
            {u: list(zip(g.track_id, g.label)) for u, g in itf.groupby("label") if u != target})


def check_drawable(sel: pd.DataFrame) -> None:
    """Every target model needs at least one target stem; say which one has none."""
    for t in LABELS:
        tgt, _ = pools(sel, t)
        if not tgt:
            raise SelectionError(f"the selection keeps no {t!r} stem to train the {t} model on")


def summary(sel: pd.DataFrame) -> dict:
    """Kept counts per target and role (short keys for metrics files)."""
    kept = sel[sel.keep]
    out = {f"{t}_targets": int(((kept.target == t) & (kept.role == "target")).sum()) for t in LABELS}
    out["songs"] = int(kept.track_id.nunique())
    return out
