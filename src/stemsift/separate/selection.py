"""Selections: which stem may be drawn for which target model, and in which role. Files are never deleted.

A selection row ``(track_id, label, target, role, keep)`` says whether the stem ``(track_id, label)`` may be
drawn while training the model for ``target``: as the **target** signal (``role='target'``) or as one of the
**interferers** summed into the mixture (``role='interferer'``). The sampler for target ``t`` draws the target
from the kept ``(target=t, role='target')`` rows and, for every other label ``u``, one interferer from the kept
``(target=t, role='interferer', label=u)`` rows.
"""
from __future__ import annotations

import warnings

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


def refined_selection(sel: pd.DataFrame, refined: dict[tuple[str, str], frozenset]) -> pd.DataFrame:
    """The refined-label rule (Koo et al., ISMIR 2023, §3.3), the only place it is applied: a stem with refined
    label set R is drawn as the **target** of model t only if R == {t}, and as an **interferer** of model t only
    if t ∉ R. A multi-instrument stem therefore never teaches a model to output another instrument as its target,
    nor to suppress its own. Rows the input selection had unkept stay unkept (filtering composes with it).
    Should no stem be exactly {t} (a classifier too weak to isolate t), model t keeps the input's rows, warned."""
    missing = sorted({(t, lb) for t, lb in zip(sel.track_id, sel.label)} - set(refined))
    if missing:
        raise SelectionError(f"no refined labels for stem {missing[0][0]}/{missing[0][1]} (run the refine stage)")
    out = sel.copy()
    sets = [refined[(t, lb)] for t, lb in zip(out.track_id, out.label)]
    is_target = [r == frozenset({t}) for r, t in zip(sets, out.target)]
    out["role"] = ["target" if it else "interferer" for it in is_target]
    out["keep"] = out.keep & pd.Series([it or t not in r for it, r, t in zip(is_target, sets, out.target)],
                                       index=out.index)
    for t in LABELS:  # a classifier that isolates no stem of t would leave model t nothing to learn from
        if not ((out.target == t) & (out.role == "target") & out.keep).any():
            warnings.warn(f"refined labels leave no stem that holds exactly {t!r}: the {t} model draws its stems "
                          "by their given labels")
            rows = out.target == t
            out.loc[rows, ["role", "keep"]] = sel.loc[rows, ["role", "keep"]].to_numpy()
    return typed(out)


def catalogue_rows(sel: pd.DataFrame, train_set: str, cleaner: str, config_hash: str, ratio: float,
                   mode: str) -> pd.DataFrame:
    """A selection with the catalogue's `selections` columns (select, filter and refine stages write these)."""
    return sel.assign(train_set=train_set, cleaner=cleaner, config_hash=config_hash, keep_ratio=ratio, mode=mode)
