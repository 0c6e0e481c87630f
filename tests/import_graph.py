"""Third-party modules a workflow script needs, by static analysis of its imports.

A job runs its script's top-level code, which imports modules (running their
top-level code, and their parent packages') and calls functions. The analysis
follows exactly that: top-level statements of every module imported, and the
bodies of the package's functions and classes that reachable code refers to,
with their function-level (lazy) imports. Imports guarded by
``try: ... except ImportError`` are optional and need nothing. A function that
calls ``import_module`` reaches every ``"perturbot.x:Name"`` string of its module
(the model registry). Calls into scanpy that need one of its optional
dependencies are listed in ``SCANPY_CALLS``.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "perturbot"
#: scanpy functions whose work is done by a package scanpy imports lazily.
SCANPY_CALLS = {
    "tl.umap": {"umap"},
    "pp.neighbors": {"umap"},  # connectivities: umap's fuzzy_simplicial_set
    "tl.leiden": {"igraph"},  # flavor="igraph"; leidenalg only for flavor="leidenalg"
}


@dataclass
class _Module:
    name: str
    tree: ast.Module
    is_package: bool
    defs: dict[str, ast.AST] = field(default_factory=dict)


def _optional_nodes(tree: ast.AST) -> set[int]:
    """ids of import nodes inside ``try`` blocks that catch ImportError."""
    optional: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try):
            caught = set()
            for handler in node.handlers:
                names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
                caught |= {n.id for n in names if isinstance(n, ast.Name)}
            if caught & {"ImportError", "ModuleNotFoundError"}:
                optional |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return optional


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skipped


def _annotation_nodes(tree: ast.AST) -> set[int]:
    """ids of nodes in annotations: strings at run time (every module uses postponed annotations)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        annotations = []
        if isinstance(node, ast.arg):
            annotations.append(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            annotations.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            annotations.append(node.annotation)
        for annotation in filter(None, annotations):
            skipped |= {id(n) for n in ast.walk(annotation)}
    return skipped


def _top_level(tree: ast.Module):
    """Nodes that run when the module is imported (class bodies yes, function bodies no)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            stack.extend(node.decorator_list)
            stack.extend(d for d in node.args.defaults + node.args.kw_defaults if d is not None)
            continue
        if isinstance(node, ast.Lambda):
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


class ImportGraph:
    """What scripts need from outside the standard library and the package."""

    def __init__(self, src: Path) -> None:
        self.src = src
        self._modules: dict[str, _Module | None] = {}

    def _module(self, name: str) -> _Module | None:
        if name not in self._modules:
            base = self.src.joinpath(*name.split("."))
            path, is_package = (base / "__init__.py", True) if (base / "__init__.py").exists() else (base.with_suffix(".py"), False)
            if not path.exists():
                self._modules[name] = None
            else:
                tree = ast.parse(path.read_text(), str(path))
                module = _Module(name, tree, is_package)
                for node in tree.body:
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        module.defs[node.name] = node
                self._modules[name] = module
        return self._modules[name]

    def needs_of_script(self, path: Path, also: tuple[str, ...] = ()) -> dict[str, str]:
        """Top-level third-party modules the script imports, directly or through the package.

        ``also``: package modules the job imports besides the script's own imports
        (those of the objects unpickled from its params). Returns module -> where it is imported.
        """
        state = _Walk(self)
        state.run_code(f"__script__.{path.stem}", ast.parse(path.read_text(), str(path)), is_package=False)
        for name in also:
            state.import_module(name)
        return state.why

    def needs_of_module(self, name: str) -> dict[str, str]:
        state = _Walk(self)
        state.import_module(name)
        return state.why


class _Walk:
    def __init__(self, graph: ImportGraph) -> None:
        self.graph = graph
        self.needs: set[str] = set()
        self.why: dict[str, str] = {}  # module -> where it is first imported
        self._where = ""
        self._seen: set[tuple[str, str | None]] = set()

    # -- modules -----------------------------------------------------------
    def import_module(self, name: str) -> bool:
        """Run a package module's top-level code (and its parents'); False if it is no module."""
        parts = name.split(".")
        for i in range(1, len(parts)):
            self.import_module(".".join(parts[:i]))
        module = self.graph._module(name)
        if module is None:
            return False
        if (name, None) not in self._seen:
            self._seen.add((name, None))
            self.run_code(name, module.tree, module.is_package)
        return True

    def run_code(self, name: str, tree: ast.Module, is_package: bool) -> None:
        bindings = self._bindings(name, tree, is_package)
        skip = _optional_nodes(tree) | _type_checking_nodes(tree) | _annotation_nodes(tree)
        defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
        self._visit_nodes(name, list(_top_level(tree)), bindings, defs, skip, is_package)

    # -- names -------------------------------------------------------------
    def _resolve(self, module: str, level: int, target: str | None, is_package: bool) -> str:
        if not level:
            return target or ""
        base = module.split(".")
        base = base[: len(base) - level + (1 if is_package else 0)]
        return ".".join(base + ([target] if target else []))

    def _bindings(self, module: str, tree: ast.AST, is_package: bool) -> dict[str, tuple[str, str | None]]:
        """name -> (module, attribute or None) for every import in ``tree`` (any depth)."""
        out: dict[str, tuple[str, str | None]] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        out[alias.asname] = (alias.name, None)
                    else:
                        top = alias.name.split(".")[0]
                        out[top] = (top, None)
            elif isinstance(node, ast.ImportFrom):
                base = self._resolve(module, node.level, node.module, is_package)
                for alias in node.names:
                    out[alias.asname or alias.name] = (base, alias.name)
        return out

    def _third_party(self, module: str) -> None:
        top = module.split(".")[0]
        if top and top != PACKAGE and top not in sys.stdlib_module_names and top != "__future__":
            self.needs.add(top)
            self.why.setdefault(top, self._where)

    def _use(self, module: str, attr: str | None) -> None:
        """Reachable code refers to ``module.attr`` (or the module itself)."""
        if module.split(".")[0] != PACKAGE:
            self._third_party(module)
            return
        if attr is None:
            self.import_module(module)
            return
        if self.import_module(f"{module}.{attr}"):  # `from package import submodule`
            return
        self.import_module(module)
        self._use_def(module, attr)

    def _use_def(self, module_name: str, attr: str) -> None:
        module = self.graph._module(module_name)
        if module is None or (module_name, attr) in self._seen:
            return
        self._seen.add((module_name, attr))
        node = module.defs.get(attr)
        bindings = self._bindings(module_name, module.tree, module.is_package)
        if node is None:
            if attr in bindings:  # a re-export
                self._use(*bindings[attr])
            elif "__getattr__" in module.defs:  # PEP 562 lazy attribute
                self._use_def(module_name, "__getattr__")
            return
        skip = _optional_nodes(module.tree) | _type_checking_nodes(module.tree) | _annotation_nodes(module.tree)
        bindings |= self._bindings(module_name, node, module.is_package)
        self._visit_nodes(module_name, list(ast.walk(node)), bindings, module.defs, skip, module.is_package, f"{module_name}.{attr}")

    def _visit_nodes(self, module, nodes, bindings, defs, skip, is_package, where=None) -> None:
        outer, self._where = self._where, where or module
        try:
            self._visit(module, nodes, bindings, defs, skip, is_package)
        finally:
            self._where = outer

    def _visit(self, module, nodes, bindings, defs, skip, is_package) -> None:
        registry_strings = False
        for node in nodes:
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == PACKAGE:
                        self.import_module(alias.name)
                    else:
                        self._third_party(alias.name)
            elif isinstance(node, ast.ImportFrom):
                base = self._resolve(module, node.level, node.module, is_package)
                if base.split(".")[0] != PACKAGE:
                    self._third_party(base)
                else:
                    self.import_module(base)
                    for alias in node.names:
                        self.import_module(f"{base}.{alias.name}")
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                if node.id == "import_module":
                    registry_strings = True
                if node.id in defs and module.startswith("__script__."):
                    self._visit_local(module, node.id, defs, bindings, skip)
                elif node.id in defs:
                    self._use_def(module, node.id)
                elif node.id in bindings:
                    self._use(*bindings[node.id])
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bindings:
                target, attr = bindings[node.value.id]
                full = f"{target}.{attr}" if attr else target
                if full.split(".")[0] == PACKAGE:
                    self._use(full, node.attr)
            if isinstance(node, ast.Attribute):
                dotted = ast.unparse(node)
                for call, extra in SCANPY_CALLS.items():
                    if dotted.endswith(f".{call}") and dotted.split(".")[0] in bindings and bindings[dotted.split(".")[0]][0] == "scanpy":
                        for extra_module in extra:
                            self.needs.add(extra_module)
                            self.why.setdefault(extra_module, f"{self._where} (scanpy.{call})")
        if registry_strings:
            tree = self.graph._module(module)
            for const in ast.walk(tree.tree) if tree else []:
                if isinstance(const, ast.Constant) and isinstance(const.value, str) and const.value.startswith(PACKAGE + "."):
                    target, _, attr = const.value.partition(":")
                    if attr:
                        self._use(target, attr)

    def _visit_local(self, module, name, defs, bindings, skip) -> None:
        """A function or class defined in the script itself."""
        if (module, name) in self._seen:
            return
        self._seen.add((module, name))
        self._visit_nodes(module, list(ast.walk(defs[name])), bindings, defs, skip, False, f"{module}.{name}")
