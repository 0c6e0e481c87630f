"""The package's modules import each other one way: no two modules import each other (function-level
imports included), except the registry's three pairs below, which are lookups by name at run time."""

import ast
import itertools
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
#: The registry (perturbot.models) and what it records: a saved model names its class, so base.save/load
#: look the name up in the registry; the registry reads declarations.json, whose writer (declare) and
#: reader (declarations) share its format.
REGISTRY_PAIRS = {
    ("perturbot.models", "perturbot.models.base"),
    ("perturbot.models", "perturbot.models.declarations"),
    ("perturbot.models.declarations", "perturbot.models.declare"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports anywhere in it (``from a import b``: a.b when a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("perturbot"):
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                      for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("perturbot")}
    return found & modules


def test_no_two_modules_import_each_other():
    paths = {module_name(p): p for p in SRC.rglob("*.py")}
    edges = {name: imports_of(path, set(paths)) - {name} for name, path in paths.items()}
    mutual = {(a, b) for a, b in itertools.combinations(sorted(paths), 2) if b in edges[a] and a in edges[b]}
    assert mutual == REGISTRY_PAIRS, sorted(mutual - REGISTRY_PAIRS)
    # the arrows that once pointed back up
    assert "perturbot.latent" not in edges["perturbot.bundle"]
    assert "perturbot.experiment" not in edges["perturbot.predict"]
    assert "perturbot.models.base" not in edges["perturbot.fingerprint"]
    assert "perturbot.data.download" not in edges["perturbot.data.io"] or "perturbot.data.io" not in edges["perturbot.data.download"]
