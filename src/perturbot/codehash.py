"""Fingerprints of the code a workflow job runs, so that an edit to perturbot reruns what it changes.

Snakemake reruns a job when its script changes, but knows nothing of the package the script
imports. Each script rule therefore gets a param ``code`` (workflow/rules/common.smk,
``add_code_params``): a fingerprint of

- the rule's script;
- every perturbot module the script reaches through imports, followed from module to module,
  at module level or inside functions (an import that runs only on some paths still counts),
  with the ``__init__`` of each package on the way;
- for a job that trains or applies one model, that model's module from the registry
  (:mod:`perturbot.models` names its classes by strings, which imports cannot see), and what
  that module reaches.

With Snakemake's default ``--rerun-triggers`` (which include ``params``) a changed fingerprint
reruns the job, and Snakemake records each output's params, this one included, in its metadata:
``snakemake --list-changes params`` lists the outputs whose code changed since they were made.

A file is hashed as its syntax tree without docstrings and positions, so comments, docstrings
and layout change no fingerprint; any change to what the code does (a constant, a default, a
line of logic) does. The tree's printed form may differ between Python versions, so a new
Python under Snakemake can change every fingerprint once (and rerun everything, as a new
interpreter may well change results). Over-approximation is deliberate: a module that is imported but not used by
a job's path still counts, since a rerun too many costs time while one too few gives a result
that no longer matches its code.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

PACKAGE = "perturbot"
SRC = Path(__file__).resolve().parents[1]  # the directory that holds the package


def module_file(name: str, src: Path = SRC) -> Path | None:
    """The file of a perturbot module or package, or None if ``name`` is not one."""
    base = src.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


@lru_cache(maxsize=None)
def imported_names(path: Path, module: str | None = None) -> frozenset[str]:
    """Names a file imports that may be perturbot modules (``from a import b`` gives a and a.b).

    ``module`` is the file's own module name, needed to resolve relative imports.
    """
    package = None
    if module is not None:
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if not package:
                    continue
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            names.add(name)
            names.update(f"{name}.{alias.name}" for alias in node.names)
    return frozenset(n for n in names if n == PACKAGE or n.startswith(PACKAGE + "."))


def model_modules(models: Iterable[str]) -> list[str]:
    """The registry modules of models named by their registry names."""
    from perturbot.models import _REGISTRY  # "module:Class" strings; read without importing the class

    return sorted({_REGISTRY[name].split(":")[0] for name in models})


def files_reached(script: Path, modules: Iterable[str] = (), src: Path = SRC) -> dict[str, Path]:
    """``{name: file}`` of the script (under its own path) and every perturbot module it reaches,
    starting also from ``modules``."""
    reached: dict[str, Path] = {str(script): Path(script)}
    todo = [(None, Path(script))]
    for name in modules:
        todo.append((name, module_file(name, src)))

    def visit(name: str) -> None:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # a module's packages run their __init__ first
            prefix = ".".join(parts[:i])
            path = module_file(prefix, src)
            if path is not None and prefix not in reached:
                reached[prefix] = path
                todo.append((prefix, path))

    for name in modules:
        visit(name)
    while todo:
        module, path = todo.pop()
        if path is None:
            continue
        for name in imported_names(path, module):
            visit(name)
    return reached


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree


@lru_cache(maxsize=None)
def file_digest(path: Path) -> str:
    """Hash of a Python file's syntax tree, without docstrings, comments or positions."""
    tree = _without_docstrings(ast.parse(Path(path).read_text(), filename=str(path)))
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()


@lru_cache(maxsize=None)
def code_fingerprint(script: str, models: tuple[str, ...] = ()) -> str:
    """16 hex digits that change when the code a job of ``script`` runs changes (see the module
    docstring); ``models``: registry names of the models the job trains or applies."""
    files = files_reached(Path(script), model_modules(models))
    digest = hashlib.sha256()
    for name in sorted(files):
        key = "<script>" if name == str(script) else name  # a checkout's location changes nothing
        digest.update(f"{key}\0{file_digest(files[name])}\n".encode())
    return digest.hexdigest()[:16]
