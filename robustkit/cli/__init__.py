"""The ``robustkit`` command line: a thin click front end, the only place that prints.

Each command group lives in its own module here and is attached to ``main`` below.
Exit codes: 0 ok, 1 runtime error (one line; traceback with --debug), 2 usage error.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click


class RobustkitGroup(click.Group):
    """Turns runtime errors into one-line messages with exit code 1 (``--debug``: traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        from robustkit.cli.usage import emit_error, wants_json

        as_json = wants_json(ctx)
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except click.ClickException as exc:
            if as_json:
                emit_error(exc.format_message(), "usage" if exc.exit_code == 2 else "runtime")
            raise
        except Exception as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            if as_json:
                emit_error(str(exc), "runtime")
            fail(str(exc) or type(exc).__name__)


def fail(message: str) -> NoReturn:
    """The one way a runtime error ends a command: ``error: <message>`` on stderr, exit 1.

    Usage errors (bad options, invalid specs) raise ``click.UsageError`` instead (exit 2).
    """
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@click.group(cls=RobustkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(package_name="robustkit")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """robustkit: train classifiers of many kinds, attack them, defend them, report."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


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


def _attach(modules: list[str]) -> None:
    import importlib

    for name in modules:
        register: Callable[[click.Group], None] = importlib.import_module(
            f"robustkit.cli.{name}").register
        register(main)


_attach(["train", "attack", "certify", "defend", "sweep", "report", "importer"])
