"""Stage `listen`: the static listening report reports/listen/index.html (+ assets/) of the lowest-scored songs
of the filter's cleaner (and `listen.cleaners`), with the filter's decisions, the simulated truth and the audit's
findings. Open it from disk; mark keep / drop with the keyboard; the downloaded CSV is what filter.verdicts reads."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from stemsift.catalogue import TRUTH
from stemsift.params import AuditParams, ContaminateParams, FilterParams, ListenParams, ScoreParams, stage_params
from stemsift.report.listen import build
from stemsift.stemset import StemSet

SELECTION = "selections.parquet"  # written by the filter stage into filter.out
AUDIT = "audit.parquet"           # written by the audit stage into audit.out


def kept_share(selection: pd.DataFrame | None, ratio, where: Path) -> float:
    """The share of training songs the filter actually kept (fixed or automatic ratio, verdicts included): other
    cleaners are shown at the same share."""
    if selection is not None:
        return selection[selection.keep].track_id.nunique() / max(selection.track_id.nunique(), 1)
    try:
        return float(ratio)
    except (TypeError, ValueError):
        raise FileNotFoundError(f"{where}: missing — run the filter stage first (filter.ratio={ratio!r})") from None


def run(params: dict) -> dict:
    c = stage_params(params, "contaminate", ContaminateParams)
    s = stage_params(params, "score", ScoreParams)
    f = stage_params(params, "filter", FilterParams)
    a = stage_params(params, "audit", AuditParams)
    lp = stage_params(params, "listen", ListenParams)
    names = [n for n in dict.fromkeys([s.cleaner, *lp.cleaners]) if n != "none"]
    if not names:
        raise ValueError("listen: no cleaner to report (score.cleaner is none and listen.cleaners is empty)")
    scores = {}
    for n in names:
        path = Path(s.out) / f"scores-{n}.parquet"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing — listen.cleaners entry {n!r} must be in score.cleaners")
        scores[n] = pd.read_parquet(path)
    sel_path = Path(f.out) / SELECTION
    selection = pd.read_parquet(sel_path) if sel_path.is_file() and s.cleaner != "none" else None
    truth = pd.read_parquet(Path(c.out) / TRUTH) if (Path(c.out) / TRUTH).is_file() else None
    audit = pd.read_parquet(Path(a.out) / AUDIT) if (Path(a.out) / AUDIT).is_file() else None
    ratio = kept_share(selection, f.ratio, sel_path)
    info = build(StemSet(c.out), scores, lp.out, filter_cleaner=s.cleaner if s.cleaner != "none" else None,
                 selection=selection, ratio=ratio, mode=f.mode, truth=truth, audit=audit, songs=int(lp.songs),
                 excerpt_s=float(lp.excerpt_s))
    print(f"listen: {info['songs']} songs ({', '.join(names)}), {info['bytes'] / 1e6:.1f} MB -> {lp.out}/index.html")
    return info
