"""Content-addressed memo of deterministic results (trained models, evaluation tables) shared between
stages: when two training sets select exactly the same stems with the same params (e.g. `cleaned` while no
cleaner is configured), the second stage copies the first one's result instead of recomputing it."""
from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
from pathlib import Path

from stemsift.stemset import _clear_dead_runs

PACKAGE = Path(__file__).resolve().parent  # the imported stemsift package: its code is what a result depends on
# params values enter every key themselves; params.py's lazy imports only validate names (cleaner registry, …)
NOT_FOLLOWED = frozenset({"stemsift.params"})


def root() -> Path:
    return Path(os.environ.get("STEMSIFT_CACHE", ".stemsift-cache"))


def key(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def files_sha1(folder: str | Path) -> dict[str, str]:
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def module_file(name: str, root: Path) -> Path | None:
    """The source file of stemsift module `name` under package folder `root` (None: not a stemsift module)."""
    parts = name.split(".")
    if parts[0] != "stemsift":
        return None
    base = root.joinpath(*parts[1:])
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def _imported(tree: ast.AST, name: str, is_pkg: bool) -> set[str]:
    """Every stemsift module a source file imports, at any depth (lazy imports inside functions count)."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                base = ".".join(pkg[:len(pkg) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)  # `from stemsift import memo` names a module
    return out


def code_closure(*modules: str, root: str | Path | None = None) -> dict[str, str]:
    """Module name -> sha1 of its source, for the given stemsift modules, every stemsift module they import
    (transitively, found by parsing the source, so a copied package tree can be hashed without importing it)
    and the packages (`__init__.py`) above each of them, which Python runs on import."""
    root = Path(root) if root is not None else PACKAGE
    todo, seen = list(modules), {}
    while todo:
        name = todo.pop()
        if name in seen or name in NOT_FOLLOWED:
            continue
        path = module_file(name, root)
        if path is None:
            continue
        src = path.read_bytes()
        seen[name] = hashlib.sha1(src).hexdigest()
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        todo.extend(_imported(ast.parse(src), name, path.name == "__init__.py"))
    return dict(sorted(seen.items()))


def code_key(*modules: str, root: str | Path | None = None) -> str:
    """One hash of the code a result depends on: `modules` and everything they import inside stemsift."""
    return key(code_closure(*modules, root=root))


def lookup(kind: str, k: str) -> Path | None:
    p = root() / kind / k
    return p if p.is_dir() else None


def store(kind: str, k: str, folder: str | Path) -> None:
    """Copy a finished result folder into the memo (atomically; a concurrent writer of the same key is fine)."""
    final = root() / kind / k
    if final.is_dir():
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    _clear_dead_runs(final)  # a writer killed mid-copy left its temp folder: never an entry, only litter
    tmp = final.with_name(f".{k}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(folder, tmp)
    try:
        os.replace(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
