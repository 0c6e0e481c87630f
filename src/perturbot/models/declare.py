"""Write ``declarations.json``, the plain-data record of every model's tags, hyper-parameters and presets.

Run after adding a model or changing its tags, parameters or presets::

    python -m perturbot.models.declare            # rewrite the record from the classes
    python -m perturbot.models.declare --check    # exit 1 if it is out of date

This imports every model (torch included); the planning layer only reads the
record (:mod:`perturbot.models.declarations`).
"""

from __future__ import annotations

import collections.abc
import json
import sys
import types
import typing
from importlib import import_module
from typing import Any, Union

from perturbot.models.declarations import HINT_NAMES, EXTRA, RECORD, TAGS, Declaration
from perturbot.params import Constraint, Interval, Options, constraints_of, hints_of


def from_class(name: str, path: str) -> Declaration:
    """A model class's declaration, read from the class itself (this imports it)."""
    module_name, cls_name = path.split(":")
    module = import_module(module_name)
    cls = getattr(module, cls_name)
    defaults = cls.default_params()
    hints = hints_of(cls)
    rules = constraints_of(cls)
    modality = getattr(cls, "PRESETS", None) or {}  # by data modality, on the class (AutoEncoder, CAE)
    named: dict[str, dict] = {}  # by recipe name: the class's PRESETS, or else its module's (CellOT, W1OT)
    if "preset" in defaults:
        tables = [t for t in (getattr(cls, "PRESETS", None), getattr(module, "PRESETS", None)) if isinstance(t, dict)]
        options = [o for r in rules.get("preset", ()) if isinstance(r, Options) for o in r.allowed()]
        for option in options:
            table = next((t for t in tables if isinstance(t.get(option), dict)), None)
            if table is not None:
                named[option] = table[option]
    return Declaration(
        name=name,
        path=path,
        tags={tag: getattr(cls, tag) for tag in TAGS},
        defaults=_plain(defaults),
        hints={p: hint_text(hints.get(p, Any)) for p in defaults},
        constraints={p: [_rule_record(r) for r in rules_] for p, rules_ in rules.items()},
        modality_presets=_plain(dict(modality)),
        named_presets=_plain(named),
    )


def record_of(declarations: list[Declaration]) -> str:
    """The text of ``declarations.json``: models sorted, one line per tag, parameter or preset (readable diffs)."""

    def compact(value: Any) -> str:
        return json.dumps(value, separators=(", ", ": "))

    lines = ["{"]
    ordered = sorted(declarations, key=lambda d: d.name)
    for i, decl in enumerate(ordered):
        lines.append(f" {json.dumps(decl.name)}: {{")
        fields = [(k, v) for k, v in vars(decl).items() if k != "name"]
        for j, (key, value) in enumerate(fields):
            end = "," if j < len(fields) - 1 else ""
            if isinstance(value, dict) and value:
                entries = [f"   {json.dumps(k)}: {compact(v)}" for k, v in value.items()]
                lines.append(f"  {json.dumps(key)}: {{\n" + ",\n".join(entries) + f"\n  }}{end}")
            else:
                lines.append(f"  {json.dumps(key)}: {compact(value)}{end}")
        lines.append(" }" + ("," if i < len(ordered) - 1 else ""))
    lines.append("}")
    return "\n".join(lines) + "\n"


def declare_all() -> list[Declaration]:
    """Every registered model's declaration, and the autoencoder's, read from the classes."""
    from perturbot.models import _REGISTRY

    return [from_class(name, path) for name, path in {**_REGISTRY, **EXTRA}.items()]


def hint_text(hint: Any) -> str:
    """A type hint as text the planning layer can rebuild (``int | None``, ``tuple[int, ...]``); else ``Any``."""
    if hint is type(None) or hint is None:
        return "None"
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return " | ".join(hint_text(arg) for arg in typing.get_args(hint))
    if origin is not None:
        name = {tuple: "tuple", list: "list", dict: "dict", collections.abc.Sequence: "Sequence",
                collections.abc.Mapping: "Mapping"}.get(origin)
        if name is None:
            return "Any"
        args = typing.get_args(hint)
        return f"{name}[{', '.join('...' if a is Ellipsis else hint_text(a) for a in args)}]" if args else name
    name = getattr(hint, "__name__", "")
    return name if HINT_NAMES.get(name, object()) is hint else "Any"


def _rule_record(rule: Constraint) -> dict:
    if isinstance(rule, Interval):
        return {"interval": [rule.low, rule.high, rule.closed]}
    return {"options": rule.allowed()}


def _plain(value: Any) -> Any:
    """JSON's view of a default or preset value (tuples as lists)."""
    return json.loads(json.dumps(value, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


def main(argv: list[str] | None = None) -> int:
    """Rewrite ``declarations.json`` from the classes; ``--check`` says whether it is up to date instead."""
    text = record_of(declare_all())
    if argv is None:
        argv = sys.argv[1:]
    if "--check" in argv:
        if not RECORD.exists() or RECORD.read_text() != text:
            print(f"{RECORD} is out of date: run python -m perturbot.models.declare", file=sys.stderr)
            return 1
        return 0
    RECORD.write_text(text)
    print(f"wrote {RECORD}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
