"""How the command line refuses bad input: finite number options, ``--param`` checks, and
errors as JSON under ``--json``.

Exit codes stay those of :mod:`robustkit.cli`: 2 for a usage error (a bad option or
``--param``, found before any work starts), 1 for a runtime error. With ``--json`` the
error is also printed to stdout as one JSON document ``{"error": ..., "kind": "usage" |
"runtime"}``, so a script reading stdout always gets JSON.
"""
from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable
from typing import Any, NoReturn

import click

from robustkit import data as datasets


def fail(message: str) -> NoReturn:
    """The one way a runtime error ends a command: ``error: <message>`` on stderr, exit 1.

    Usage errors (bad options, invalid specs) raise ``click.UsageError`` instead (exit 2).
    """
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def emit_json(obj: Any) -> None:
    """Print one JSON document (the ``--json`` output of every command)."""
    click.echo(json.dumps(obj, indent=2, default=str))


def parse_params(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``("k=v", ...)`` -> dict, values parsed as JSON when they parse (numbers, lists,
    true/false), else kept as strings. Raises click.BadParameter on a pair without '='."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--param")
        key, raw = pair.split("=", 1)
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def dataset_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A ``--dataset`` callback: the name checked by the data layer, or a usage error."""
    try:
        return datasets.check_name(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


class FiniteFloat(click.FloatRange):
    """``click.FloatRange`` that also refuses nan and inf (which compare False to any bound
    and so pass a plain range)."""

    name = "finite float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> Any:
        rv = super().convert(value, param, ctx)
        if isinstance(rv, float) and not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return rv


def refuse(found: Iterable[str], hint: str = "--param") -> None:
    """Raise a usage error (exit 2) listing every problem in ``found``, if any."""
    found = list(found)
    if found:
        raise click.BadParameter("; ".join(found), param_hint=hint)


def wants_json(ctx: click.Context) -> bool:
    """Whether the command line asked for ``--json`` (read before the subcommand parses
    its options, so that its own usage errors come out as JSON too)."""
    return "--json" in ctx.args


def emit_error(message: str, kind: str, **extra: Any) -> None:
    """Print one ``{"error": message, "kind": kind, **extra}`` document on stdout."""
    click.echo(json.dumps({"error": message, "kind": kind, **extra}, indent=2))
