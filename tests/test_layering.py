"""Thin stages: no stage module imports another stage module (what two stages share lives in the package), and
every DVC stage depends on the stemsift code its module imports (so `dvc repro` re-runs it when that code changes)."""
import ast
from pathlib import Path

import pytest
import yaml

from stemsift import memo

ROOT = Path(__file__).resolve().parents[1]
STAGES = sorted(p.stem for p in (ROOT / "src/stemsift/stages").glob("*.py") if p.stem != "__init__")


def stage_imports(source: str) -> set[str]:
    """stemsift.stages.* modules imported by a stage module's source (absolute, relative, at any depth)."""
    tree = ast.parse(source)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = "stemsift.stages" + (f".{node.module}" if node.module else "") if node.level else (node.module or "")
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m.startswith("stemsift.stages.") and m[len("stemsift.stages."):] in STAGES}


@pytest.mark.parametrize("name", STAGES)
def test_no_stage_module_imports_another(name):
    source = (ROOT / "src/stemsift/stages" / f"{name}.py").read_text()
    assert stage_imports(source) - {f"stemsift.stages.{name}"} == set()


@pytest.mark.parametrize("line, found", [
    ("from stemsift.stages.train import runs_file", "stemsift.stages.train"),
    ("from . import select", "stemsift.stages.select"),
    ("from .report import compare", "stemsift.stages.report"),
    ("import stemsift.stages.evaluate as ev", "stemsift.stages.evaluate"),
    ("def f():\n    from stemsift.stages import refine\n", "stemsift.stages.refine"),  # a lazy import counts too
])
def test_the_check_catches_every_import_form(line, found):
    assert found in stage_imports(line)


def docstring_only(path: Path) -> bool:
    body = ast.parse(path.read_text()).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def dvc_stages() -> dict[str, tuple[str, list[str]]]:
    """DVC stage name -> (stemsift subcommand, its src/ deps)."""
    out = {}
    for name, st in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        body = st.get("do", st)
        cmd = body["cmd"].split()
        out[name] = (cmd[1], [d if isinstance(d, str) else next(iter(d)) for d in body.get("deps", [])])
    return out


@pytest.mark.parametrize("stage", sorted(dvc_stages()))
def test_dvc_deps_cover_the_code_the_stage_imports(stage):
    command, deps = dvc_stages()[stage]
    closure = memo.code_closure(f"stemsift.stages.{command}", root=ROOT / "src/stemsift")
    files = {memo.module_file(m, ROOT / "src/stemsift").relative_to(ROOT).as_posix() for m in closure}
    files = {f for f in files if not docstring_only(ROOT / f)}  # a docstring-only __init__.py changes nothing
    covered = lambda f: any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)  # noqa: E731
    assert sorted(f for f in files if not covered(f)) == []


def test_evaluate_depends_on_the_test_audio():
    assert "${contaminate.out}" in dvc_stages()["evaluate"][1]


def test_train_stage_params_name_every_train_key():
    """train@<set> lists its params key by key (so `-S train.labels=…` re-runs `cleaned` alone): a new TrainParams
    field missing from the list would never re-run a training. Resolved through DVC, per foreach item."""
    from dataclasses import fields

    from dvc.repo import Repo

    from stemsift.params import TrainParams

    only_cleaned = {"labels", "method", "mixit"}
    every = {f"train.{f.name}" for f in fields(TrainParams)}
    stages = {s.name: s for s in Repo(str(ROOT)).index.stages if s.name.startswith("train@")}
    assert len(stages) == 5
    for name, stage in stages.items():
        keys = {k for p in stage.params for k in p.params}
        expect = every if name == "train@cleaned" else every - {f"train.{k}" for k in only_cleaned}
        assert keys == expect, (name, sorted(keys ^ expect))
