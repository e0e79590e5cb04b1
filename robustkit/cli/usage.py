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
from collections.abc import Iterable
from typing import Any

import click


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
