"""Hyper-parameter validation: types from the constructor's hints, ranges declared once on the class.

In the spirit of scikit-learn's ``_parameter_constraints``: each model class
declares ``parameter_constraints`` (merged along its bases), a mapping from a
hyper-parameter to an :class:`Interval` (numbers, and each number of a list),
an :class:`Options` (strings) or a tuple of both (``reg_covar``: ``"auto"`` or
a number >= 0); the type comes from the constructor's type hints. One
function, :func:`validate_params`, checks them, with one message naming the
key path, the value and what is allowed.

Two callers: the configuration check (:mod:`perturbot.config`, run by the
Snakefile at start-up, on the models' plain-data declarations) with ``convert=True``, where YAML has read ``1e-3`` and
``1e5`` as strings: numeric strings become numbers of the hinted type (``"1e5"``
an int 100000 where the hint is int), and the converted values replace the
strings in the config, so nothing downstream sees a string; and every model's
``fit`` (``PerturbationModel._validate_params``) with ``convert=False``, for a
Python user's ``CellOT(lr="abc")``: the same message, no conversion.
"""

from __future__ import annotations

import math
import numbers
import types
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

from perturbot.errors import ClearError


class ParameterError(ClearError, ValueError):
    """A hyper-parameter of the wrong type or outside its range; the message names the key path."""

    kind = "Hyper-parameter error"


@dataclass(frozen=True)
class Interval:
    """Numbers between ``low`` and ``high`` (None: unbounded); ``closed`` is "both", "left", "right" or "neither"."""

    low: float | None = None
    high: float | None = None
    closed: str = "both"

    def __contains__(self, value: float) -> bool:
        if self.low is not None and not (value >= self.low if self.closed in ("both", "left") else value > self.low):
            return False
        return self.high is None or (value <= self.high if self.closed in ("both", "right") else value < self.high)

    def __str__(self) -> str:
        left, right = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.high is None:
            return "" if self.low is None else f"{'>=' if left else '>'} {self.low:g}"
        if self.low is None:
            return f"{'<=' if right else '<'} {self.high:g}"
        return f"in {'[' if left else '('}{self.low:g}, {self.high:g}{']' if right else ')'}"


@dataclass(frozen=True)
class Options:
    """Strings from a fixed set; ``values`` may be a mapping (its keys) or a callable, read when checked."""

    values: Collection[str] | Callable[[], Collection[str]]

    def allowed(self) -> list[str]:
        values = self.values() if callable(self.values) else self.values
        return [str(v) for v in values]

    def __contains__(self, value: str) -> bool:
        return value in self.allowed()

    def __str__(self) -> str:
        allowed = self.allowed()
        return repr(allowed[0]) if len(allowed) == 1 else "one of " + ", ".join(repr(v) for v in allowed)


Constraint = Union[Interval, Options]


def constraints_of(cls: type) -> dict[str, tuple[Constraint, ...]]:
    """Every constraint a class declares in ``parameter_constraints``, its own over its bases'."""
    merged: dict[str, tuple[Constraint, ...]] = {}
    for klass in reversed(cls.__mro__):
        for name, rule in vars(klass).get("parameter_constraints", {}).items():
            merged[name] = rule if isinstance(rule, tuple) else (rule,)
    return merged


def hints_of(cls: type) -> dict[str, Any]:
    """The constructor's type hints (string annotations evaluated in the class's module)."""
    return typing.get_type_hints(cls.__init__)


# ------------------------------------------------------------------ checking one value
class _Rejected(Exception):
    """The value does not fit one member of a hint (why, as a predicate: ``is not >= 1``)."""


def _a(value: Any) -> str:
    """``a float``, ``an int``: the type of ``value`` with its article."""
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _members(hint: Any) -> list[Any]:
    """The alternatives of a hint (``int | None`` -> [int, NoneType])."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        return list(typing.get_args(hint))
    return [hint]


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or _is_numpy(value, "bool", "bool_")


def _is_numpy(value: Any, *names: str) -> bool:
    """A numpy object of one of these type names, recognised without importing numpy (the planning layer has none)."""
    return type(value).__module__ == "numpy" and type(value).__name__ in names


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not _is_bool(value)


def _number(value: Any, integer: bool, convert: bool) -> int | float:
    if isinstance(value, str):
        if not convert:
            raise _Rejected("is a string, not a number")
        try:
            value = float(value.strip())
        except ValueError:
            raise _Rejected("is not a number") from None
        if integer and value.is_integer():
            value = int(value)
    if not _is_number(value):
        raise _Rejected(f"is {_a(value)}, not a number")
    if not math.isfinite(float(value)):
        raise _Rejected("is not a finite number")
    if integer and not isinstance(value, numbers.Integral):
        if not (convert and float(value).is_integer()):
            raise _Rejected("is not a whole number")
        value = int(value)
    return value


def _check_one(value: Any, hint: Any, rules: tuple[Constraint, ...], convert: bool) -> Any:
    """``value`` checked (and, with ``convert``, converted) against one member of a hint."""
    origin = typing.get_origin(hint)
    if hint is type(None):
        if value is not None:
            raise _Rejected("is not None")
        return None
    if hint is Any:
        return value
    if hint is bool:
        if _is_bool(value):
            return bool(value)
        raise _Rejected("is a string, not a boolean (write true or false without quotes)" if isinstance(value, str)
                        else f"is {_a(value)}, not a boolean")
    if hint in (int, float):
        value = _number(value, hint is int, convert)
        for rule in rules:
            if isinstance(rule, Interval) and value not in rule:
                raise _Rejected(f"is not {rule}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise _Rejected(f"is {_a(value)}, not a string")
        for rule in rules:
            if isinstance(rule, Options) and value not in rule:
                raise _Rejected(f"is not {rule}")
        return value
    if origin in (tuple, list, Sequence, typing.get_origin(Sequence[int])):
        if _is_numpy(value, "ndarray") and value.ndim == 1:
            value = value.tolist()
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
            raise _Rejected(f"is {_a(value)}, not a list")
        args = typing.get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise _Rejected(f"has {len(value)} values, not {len(args)}")
            element_hints = list(args)
        else:
            element_hints = [args[0] if args else Any] * len(value)
        checked = []
        for i, (item, item_hint) in enumerate(zip(value, element_hints)):
            try:
                checked.append(_check_union(item, item_hint, rules, convert))
            except _Rejected as err:
                raise _Rejected(f"has item {i} = {item!r}, which {err}") from None
        return type(value)(checked)
    return value  # a hint this checker does not know: the model's own checks decide


def _check_union(value: Any, hint: Any, rules: tuple[Constraint, ...], convert: bool) -> Any:
    reasons = []
    members = _members(hint)
    # a string that could be a number is tried as a number first ("1e-3" for ``float | str``)
    members.sort(key=lambda m: m is str)
    for member in members:
        try:
            return _check_one(value, member, rules, convert)
        except _Rejected as err:
            reasons.append(str(err))
    non_none = [r for m, r in zip(members, reasons) if m is not type(None)]
    raise _Rejected(non_none[0] if len(non_none) == 1 else "is not allowed")


def describe(hint: Any, rules: tuple[Constraint, ...], plural: bool = False) -> str:
    """What a hint with its constraints allows, in words (``a number > 0 or None (null)``)."""
    words = []
    for member in _members(hint):
        origin = typing.get_origin(member)
        if member is type(None):
            continue
        if member is bool:
            words.extend(["true", "false"])
        elif member in (int, float):
            ranges = " ".join(str(r) for r in rules if isinstance(r, Interval))
            kind = ("integers" if plural else "an integer") if member is int else ("numbers" if plural else "a number")
            words.append(kind + (f" {ranges}" if ranges else ""))
        elif member is str:
            options = [str(r) for r in rules if isinstance(r, Options)]
            words.append(options[0] if options else ("strings" if plural else "a string"))
        elif origin in (tuple, list, Sequence, typing.get_origin(Sequence[int])):
            args = typing.get_args(member)
            if origin is tuple and args and args[-1] is not Ellipsis:
                words.append(f"a list of {len(args)} " + describe(args[0], rules, plural=True))
            else:
                words.append("a list of " + describe(args[0] if args else Any, rules, plural=True))
        else:
            words.append(getattr(member, "__name__", str(member)))
    if type(None) in _members(hint):
        words.append("None (null)")
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


# ------------------------------------------------------------------ checking all
def validate_params(cls: Any, params: Mapping[str, Any], where: str, *, convert: bool) -> dict[str, Any]:
    """``params`` checked against ``cls``'s hints and constraints; returns them, converted where ``convert``.

    ``cls`` is an estimator class, or its plain-data declaration
    (:mod:`perturbot.models.declarations`), which the planning layer reads
    without importing the class.

    Raises :class:`ParameterError` naming ``<where>.<name>``, the value, why it
    is refused and what is allowed. Names the class does not take are left to
    the caller (the config check reports them with the list of known ones).
    """
    if hasattr(cls, "type_hints"):
        hints, rules = cls.type_hints(), cls.parameter_constraints()
    else:
        hints, rules = hints_of(cls), constraints_of(cls)
    checked = dict(params)
    for name, value in params.items():
        if name not in hints:
            continue
        hint, rule = hints[name], rules.get(name, ())
        try:
            checked[name] = _check_union(value, hint, rule, convert)
        except _Rejected as err:
            raise ParameterError(
                f"{where}.{name}: {value!r} {err}; {name} must be {describe(hint, rule)}"
            ) from None
    return checked
