"""Declarative checks of hyperparameter values, shared by models, attacks and defenses.

A rule is a small function ``rule(value) -> str | None``: None when the value is valid,
else what is allowed ("an integer >= 1"). Each registry entry declares its rules next to
its definition (``rules={"steps": integer(1)}``); parameters without a declared rule get
one inferred from their default's type (``infer``), so a newly registered attack has its
types checked without declaring anything. :func:`problems` applies the rules to a whole
parameter dict and returns every problem at once, so a sweep spec or a command line is
checked before anything runs.

Example:
    >>> problems({"steps": -3, "loss": "ce"}, {"steps": integer(1), "loss": choice("ce")})
    ['steps=-3 is not valid: expected an integer >= 1']
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

Rule = Callable[[Any], "str | None"]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _fmt(v: float) -> str:
    return str(v) if isinstance(v, int) else f"{v:g}"


def _bounds(low: float | None, high: float | None, open_low: bool, open_high: bool = False
            ) -> str:
    if low is not None and high is not None:
        return (f"in {'(' if open_low else '['}{_fmt(low)}, {_fmt(high)}"
                f"{')' if open_high else ']'}")
    if low is not None:
        return f"{'>' if open_low else '>='} {_fmt(low)}"
    if high is not None:
        return f"{'<' if open_high else '<='} {_fmt(high)}"
    return ""


def _maybe_none(rule: Rule, none: bool, what: str) -> Rule:
    def check(v: Any) -> str | None:
        if v is None:
            return None if none else what
        return rule(v)

    return check


def integer(low: int | None = None, high: int | None = None, *, none: bool = False) -> Rule:
    """An int (not a bool) in [low, high]; ``none=True`` also allows None."""
    what = f"an integer {_bounds(low, high, False)}".rstrip() + (" or null" if none else "")

    def check(v: Any) -> str | None:
        ok = _is_int(v) and (low is None or v >= low) and (high is None or v <= high)
        return None if ok else what

    return _maybe_none(check, none, what)


def number(low: float | None = None, high: float | None = None, *, open_low: bool = False,
           open_high: bool = False, none: bool = False) -> Rule:
    """A finite int or float (not a bool) in [low, high] (``open_low``/``open_high``: the
    bound excluded); ``none=True`` also allows None."""
    what = f"a number {_bounds(low, high, open_low, open_high)}".rstrip() + (
        " or null" if none else "")

    def check(v: Any) -> str | None:
        ok = _is_number(v) and (low is None or (v > low if open_low else v >= low)) and (
            high is None or (v < high if open_high else v <= high))
        return None if ok else what

    return _maybe_none(check, none, what)


def optional(rule: Rule) -> Rule:
    """``rule``, or None."""
    return lambda v: None if v is None else (None if rule(v) is None else f"{rule(v)} or null")


def positive(*, none: bool = False) -> Rule:
    """A finite number > 0."""
    rule = number(0, open_low=True, none=none)
    what = "a positive number" + (" or null" if none else "")
    return lambda v: None if rule(v) is None else what


def choice(*values: Any, none: bool = False) -> Rule:
    """One of ``values``."""
    what = f"one of {list(values)}" + (" or null" if none else "")

    def check(v: Any) -> str | None:
        return None if any(v == c and type(v) is type(c) for c in values) else what

    return _maybe_none(check, none, what)


def boolean() -> Rule:
    """true or false."""
    return lambda v: None if isinstance(v, bool) else "true or false"


def text() -> Rule:
    """A string."""
    return lambda v: None if isinstance(v, str) else "a string"


def integers(low: int = 1, *, length: int | None = None, min_length: int = 0) -> Rule:
    """A list (or tuple) of ints >= low, of exactly ``length`` entries or at least
    ``min_length``."""
    size = f"{length}" if length is not None else f"at least {min_length}" if min_length else ""
    what = f"a list of {size + ' ' if size else ''}integers >= {low}"

    def check(v: Any) -> str | None:
        if not isinstance(v, (list, tuple)) or not all(_is_int(e) and e >= low for e in v):
            return what
        n_ok = len(v) == length if length is not None else len(v) >= min_length
        return None if n_ok else what

    return check


def either(*rules: Rule) -> Rule:
    """Valid when any of ``rules`` accepts the value."""

    def check(v: Any) -> str | None:
        found = [r(v) for r in rules]
        return None if any(f is None for f in found) else " or ".join(str(f) for f in found)

    return check


def infer(default: Any) -> Rule | None:
    """The rule a default value implies (its type), or None when it implies none."""
    if isinstance(default, bool):
        return boolean()
    if _is_int(default):
        return integer()
    if isinstance(default, float):
        return number()
    if isinstance(default, str):
        return text()
    return None


def rules_from(defaults: Mapping[str, Any], declared: Mapping[str, Rule] | None = None
               ) -> dict[str, Rule]:
    """``declared`` rules plus, for every other default, the rule its type implies."""
    out = {k: r for k, r in ((k, infer(v)) for k, v in defaults.items()) if r is not None}
    out.update(declared or {})
    return out


def problems(params: Mapping[str, Any], rules: Mapping[str, Rule], *, prefix: str = ""
             ) -> list[str]:
    """Every ``params`` value its rule rejects, as ``"key=value is not valid: expected
    ..."`` (parameters without a rule are not checked here)."""
    out = []
    for key, value in params.items():
        rule = rules.get(key)
        why = rule(value) if rule is not None else None
        if why is not None:
            out.append(f"{prefix}{key}={value!r} is not valid: expected {why}")
    return out
