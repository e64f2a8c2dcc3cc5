"""`stemsift curate <folder>`: the curate-only pipeline (curate/dvc.yaml) on a user's folder — ingest, embed, the
blind cleaners, automatic ratio, audit, listening report, catalogue, export — with no separator trained and no truth.

The folder's structure is checked before DVC starts (one line naming the file and the fault); the run itself is
`dvc repro curate/dvc.yaml` after the folder, cleaners and export format are written into curate/params.yaml.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from stemsift.stemset import StemSetError

WORKSPACE = "curate"
NEED_SEPARATOR = ("baseline",)  # a cleaner needing one of these reads a trained separator: opt-in on this path
ERROR_LINE = re.compile(r"^stemsift \w+: error: .*$", re.M)


class CurateError(ValueError):
    """A stage of the curate pipeline failed; the message is that stage's own one-line error."""


def check_folder(folder: Path) -> None:
    """The folder's layout (splits, song folders, stem names, missing stems) and every stem file's header: faults a
    user fixes before DVC starts; a file whose samples are bad fails in the prepare stage with the same kind of line."""
    from stemsift.audio import audio_info
    from stemsift.data.ingest import REFERENCE_LIST, discover, read_reference_list
    from stemsift.data.moisesdb import is_moisesdb

    if not folder.is_dir():
        raise StemSetError(f"{folder}: not a folder")
    if not is_moisesdb(str(folder)):
        tracks = discover(folder)
        if (folder / REFERENCE_LIST).is_file():
            read_reference_list(folder / REFERENCE_LIST, tracks)
        for track in tracks:
            for path in track.files.values():
                audio_info(path)


def check_cleaners(names: list[str], workspace: Path, params: dict) -> None:
    """Cleaners that read the baseline separator run only where one was put at their `model` path."""
    from stemsift.clean import REGISTRY
    from stemsift.params import ParamsError

    for name in names:
        if name not in REGISTRY:
            raise ParamsError(f"--cleaners: unknown cleaner {name!r} (available: {', '.join(sorted(REGISTRY))})")
        if set(REGISTRY[name].needs) & set(NEED_SEPARATOR):
            model = {**REGISTRY[name].defaults, **(params.get("cleaners") or {}).get(name, {})}["model"]
            if not (workspace / model).is_dir():
                raise ParamsError(f"cleaner {name!r} needs a trained baseline separator at {workspace / model} "
                                  f"(cleaners.{name}.model); the curate path trains none: put one there or leave {name} out")


def write_params(path: Path, source: Path, cleaners: list[str] | None, fmt: str | None) -> None:
    """Set data.source (and score.cleaners / export.format when given) in the workspace's params file, comments
    kept; written to a temp file, then renamed."""
    from ruamel.yaml import YAML

    yaml = YAML()
    doc = yaml.load(path.read_text())
    doc["data"]["source"] = str(source)
    if cleaners:
        doc["score"]["cleaners"] = cleaners
        if doc["score"]["cleaner"] not in cleaners:
            doc["score"]["cleaner"] = cleaners[0]
    if fmt:
        doc["export"]["format"] = fmt
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w") as f:
        yaml.dump(doc, f)
    tmp.replace(path)


def run(folder: str | Path, workspace: str | Path = WORKSPACE, cleaners: list[str] | None = None,
        fmt: str | None = None) -> Path:
    """Check, configure, `dvc repro` the workspace's pipeline; returns the workspace. A failing stage's own
    one-line error is raised again as this command's."""
    from stemsift.params import load_params

    folder, ws = Path(folder).expanduser().resolve(), Path(workspace)
    if not (ws / "dvc.yaml").is_file():
        raise FileNotFoundError(f"{ws / 'dvc.yaml'}: no curate pipeline here (run from the repository root)")
    check_folder(folder)
    params = load_params(ws / "params.yaml")
    check_cleaners(cleaners or list(params["score"]["cleaners"]), ws, params)
    write_params(ws / "params.yaml", folder, cleaners, fmt)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen(["dvc", "repro", "dvc.yaml"], cwd=ws, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines = []
    for line in proc.stdout:  # passed through as it comes; kept to find a stage's error line
        sys.stdout.write(line)
        lines.append(line)
    if proc.wait():
        found = ERROR_LINE.findall("".join(lines))
        raise CurateError(found[-1].split(": error: ", 1)[1] if found else
                           f"dvc repro {ws / 'dvc.yaml'} failed (exit {proc.returncode}); see its output above")
    return ws
