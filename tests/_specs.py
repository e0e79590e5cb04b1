"""Sweep-spec TOML text for tests, built from plain dicts so that a test states only what it
varies (``from _specs import spec_text``).

The text is rendered one ``key = value`` a line in the order given, lists as ``[a, b]`` and
dicts as inline tables ``{ k = v }``, so tests may still ``str.replace`` a rendered line.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

FGSM: dict[str, Any] = {"attack": "fgsm"}
PGD3: dict[str, Any] = {"name": "pgd-3", "attack": "pgd", "params": {"steps": 3}}


def toml_value(value: Any) -> str:
    """One TOML value: strings quoted, booleans lower case, lists and inline tables nested."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def table(header: str, fields: Mapping[str, Any]) -> str:
    """``[header]`` (or ``[[header]]`` for an array-of-tables name) and its fields."""
    lines = [header] + [f"{k} = {toml_value(v)}" for k, v in fields.items()]
    return "\n".join(lines) + "\n"


def spec_text(*, sweep: Mapping[str, Any] | None = None,
              datasets: Iterable[Mapping[str, Any]] = (),
              models: Iterable[Mapping[str, Any]] = (),
              defenses: Iterable[Mapping[str, Any]] = (),
              attacks: Iterable[Mapping[str, Any]] = ()) -> str:
    """A whole spec: the ``[sweep]`` table (if given), then each array of tables in order."""
    parts = [table("[sweep]", sweep)] if sweep is not None else []
    for kind, entries in (("datasets", datasets), ("models", models),
                          ("defenses", defenses), ("attacks", attacks)):
        parts += [table(f"[[{kind}]]", e) for e in entries]
    return "\n" + "".join(parts)
