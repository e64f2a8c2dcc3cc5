"""`stemsift export`: the cleaned set in the layouts ZFTurbo's Music-Source-Separation-Training (MSST) reads,
or as a plain CSV list, with a dataset card (README.md). Files are hard-linked from the filtered stem set
(copied only across file systems), so an export costs no space.

MSST layouts (its docs/dataset_types.md and utils/dataset.py):
- type 1 (MUSDB): ``train/<song>/<stem>.<ext>`` — a song folder must hold every stem, so only songs whose
  four stems are all kept are exported (songs with a stem-level drop are listed in the card).
- type 2 (stems): ``train/<stem>/<song>.<ext>`` — every kept stem on its own.
- type 3 (CSV): ``train.csv`` with columns ``instrum,path`` (absolute paths) over the type-2 files.
- validation (every type): ``valid/<song>/{<stem>,mixture}.<ext>`` from the clean reference split (MSST globs
  ``*/mixture.<inference.extension>``); the clean test split likewise under ``test/``.
`csv`: ``<split>/<song>/<stem>.<ext>`` (MUSDB18-HQ layout) plus ``stems.csv`` (split, track_id, label, path).
"""
from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import yaml

from stemsift import LABELS, MIXTURE, __version__
from stemsift.params import params_hash
from stemsift.progress import progress
from stemsift.stemset import StemSet, StemSetError, atomic_dir

FORMATS = ("msst-type1", "msst-type2", "msst-type3", "csv")
CARD = "README.md"
MARK = "<!-- stemsift export -->"  # an existing OUT is replaced only if it carries this mark
SELECTION = "selections.parquet"


def kept_stems(sel: pd.DataFrame) -> set[tuple[str, str]]:
    """(track, label) of the stems the selection keeps as the target of their own model."""
    k = sel[sel.keep & (sel.role == "target") & (sel.target == sel.label)]
    return set(zip(k.track_id, k.label))


class _Linker:
    def __init__(self, src: StemSet, out: Path):
        self.src, self.out, self.links, self.copies = src, out, 0, 0

    def put(self, track: str, label: str, rel: str) -> str:
        """Hard-link (or copy) one file of the stem set to ``out/rel`` + the source's extension; return the path."""
        src = self.src.stem_path(track, label)
        rel = f"{rel}{src.suffix}"
        dst = self.out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
            self.links += 1
        except OSError:  # another file system
            shutil.copyfile(src, dst)
            self.copies += 1
        return rel


def export(stems: str | Path, fmt: str, out: str | Path, params: dict | None = None) -> dict:
    """Write the export of the filtered stem set ``stems`` (with its selections.parquet) into ``out``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (use {', '.join(FORMATS)})")
    ss = StemSet(stems)
    if not (ss.root / SELECTION).is_file():
        raise StemSetError(f"{ss.root / SELECTION}: missing (export reads the filter stage's output, data/filtered)")
    sel = pd.read_parquet(ss.root / SELECTION)
    out = Path(out)
    if out.exists() and (not (out / CARD).is_file() or MARK not in (out / CARD).read_text(errors="replace")):
        if not out.is_dir() or any(out.iterdir()):
            raise FileExistsError(f"{out}: exists and is not a stemsift export (remove it or choose another folder)")
    kept = kept_stems(sel) & set(zip(ss.stems.track_id, ss.stems.label))
    train = sorted({t for t, _ in kept})
    complete = [t for t in train if all((t, lb) in kept for lb in LABELS)]
    rows = []
    with atomic_dir(out) as tmp:
        ln = _Linker(ss, tmp)
        for t, lb in progress(sorted(kept), desc="export", unit="stems"):
            if fmt == "msst-type1":
                if t in complete:
                    rows.append(("train", t, lb, ln.put(t, lb, f"train/{t}/{lb}")))
            elif fmt == "csv":
                rows.append(("train", t, lb, ln.put(t, lb, f"train/{t}/{lb}")))
            else:
                rows.append(("train", t, lb, ln.put(t, lb, f"train/{lb}/{t}")))
        for split, folder in (("reference", "valid" if fmt != "csv" else "reference"), ("test", "test")):
            for t in ss.track_ids(split):
                for lb in LABELS + (MIXTURE,):
                    rows.append((split, t, lb, ln.put(t, lb, f"{folder}/{t}/{lb}")))
        table = pd.DataFrame(rows, columns=["split", "track_id", "label", "path"])
        if fmt == "msst-type3":
            tr = table[table.split == "train"]
            pd.DataFrame({"instrum": tr.label, "path": [str((out / p).resolve()) for p in tr.path]}).to_csv(
                tmp / "train.csv", index=False)
        if fmt == "csv":
            table.to_csv(tmp / "stems.csv", index=False)
        info = card_info(ss, sel, table, fmt, params, partial=sorted(set(train) - set(complete)), links=ln.links,
                         copies=ln.copies)
        (tmp / CARD).write_text(dataset_card(info))
    return info


def git_revision(cwd: str | Path = ".") -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return rev + (" (uncommitted changes)" if dirty else "")


def dvc_hash(folder: str | Path, lock: str | Path = "dvc.lock") -> str | None:
    """The md5 dvc.lock records for an output folder: the dataset version `dvc import` would pull."""
    try:
        stages = (yaml.safe_load(Path(lock).read_text()) or {}).get("stages", {})
    except (OSError, yaml.YAMLError):
        return None
    for stage in stages.values():
        for o in stage.get("outs", []) or []:
            if Path(o.get("path", "")) == Path(folder):
                return o.get("md5")
    return None


def card_info(ss: StemSet, sel: pd.DataFrame, table: pd.DataFrame, fmt: str, params: dict | None,
              partial: list[str], links: int, copies: int) -> dict:
    first = sel.iloc[0] if len(sel) else {}
    verdicts = ss.root / "verdicts.parquet"
    vfile = None
    if verdicts.is_file() and len(v := pd.read_parquet(verdicts)):
        vfile = f"{v.file.iloc[0]} ({len(v)} verdicts, {int(v.overrode.sum())} overrode the scores)"
    counts = table[table.label != MIXTURE].groupby(["split", "label"]).size().unstack(fill_value=0)
    p = {k: v for k, v in (params or {}).items() if not k.startswith("_")}
    return {
        "format": fmt, "source": str(ss.tracks.source.iloc[0]) or "unknown", "stem_set": str(ss.root),
        "cleaner": str(first.get("cleaner", "unknown")), "ratio": first.get("keep_ratio", "unknown"),
        "mode": str(first.get("mode", "")), "filter_config": str(first.get("config_hash", "")), "verdicts": vfile,
        "train_songs": int(table[table.split == "train"].track_id.nunique()),
        "train_songs_in_set": int(sel.track_id.nunique()),
        "counts": {s: {lb: int(counts.loc[s].get(lb, 0)) for lb in LABELS} for s in counts.index},
        "partial_songs": partial, "sample_rate": ss.sample_rate, "channels": ss.channels,
        "extension": Path(ss.stems.path.iloc[0]).suffix.lstrip("."),
        "params_hash": params_hash(p) if p else "unknown", "git": git_revision(), "dvc_md5": dvc_hash(ss.root),
        "stemsift": __version__, "links": links, "copies": copies,
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


LAYOUT = {
    "msst-type1": "`train/<song>/<stem>.{ext}` — MSST dataset type 1 (MUSDB); use `--data_path train`",
    "msst-type2": "`train/<stem>/<song>.{ext}` — MSST dataset type 2 (stems); use `--data_path train`",
    "msst-type3": "`train.csv` (`instrum,path`, absolute paths to `train/<stem>/<song>.{ext}`) — MSST dataset type 3; "
                  "use `--data_path train.csv`",
    "csv": "`stems.csv` (split, track_id, label, path) over `<split>/<song>/<stem>.{ext}` (MUSDB18-HQ layout)",
}


def dataset_card(i: dict) -> str:
    ext = i["extension"]
    rows = "\n".join(f"| {s} | " + " | ".join(str(c[lb]) for lb in LABELS) + " |" for s, c in sorted(i["counts"].items()))
    partial = (f"\n{len(i['partial_songs'])} kept songs with a stem-level drop are not in `train/` (type 1 needs "
               f"all four stems per song; type 2 / 3 export them): {', '.join(i['partial_songs'])}\n"
               if i["partial_songs"] and i["format"] == "msst-type1" else "")
    valid = ("" if i["format"] == "csv" else
             f"\nValidation: `valid/<song>/{{vocals,bass,drums,other,mixture}}.{ext}` (the clean reference split); "
             f"`--valid_path valid`" + (f" and `inference.extension: {ext}` in the MSST config" if ext != "wav" else "")
             + ". The clean test split is under `test/` in the same layout.\n")
    return f"""{MARK}
# Cleaned stem set ({i['format']})

Exported by stemsift {i['stemsift']} on {i['created']}.

| | |
|---|---|
| source | `{i['source']}` |
| cleaner | `{i['cleaner']}` |
| keep ratio | {i['ratio']} ({i['mode']}) |
| human verdicts | {i['verdicts'] or 'none'} |
| training songs | {i['train_songs']} exported of {i['train_songs_in_set']} |
| audio | {ext}, {i['sample_rate']} Hz, {i['channels']} channel(s) |
| params hash | `{i['params_hash']}` (filter config `{i['filter_config']}`) |
| git revision | `{i['git']}` |
| DVC md5 of the filtered set | `{i['dvc_md5'] or 'not in dvc.lock'}` |
| files | {i['links']} hard links, {i['copies']} copies |

Layout: {LAYOUT[i['format']].format(ext=ext)}.
{valid}{partial}
Stems per label:

| split | {' | '.join(LABELS)} |
|---|{'---|' * len(LABELS)}
{rows}
"""
