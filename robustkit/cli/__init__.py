"""The ``robustkit`` command line: a thin click front end, the only place that prints.

Each command group lives in its own module here and is attached to ``main`` below.
Exit codes: 0 ok, 1 runtime error (one line; traceback with --debug), 2 usage error.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import click

from robustkit.cli.usage import emit_error, emit_json, fail, parse_params, wants_json

__all__ = ["emit_json", "fail", "main", "parse_params"]


class RobustkitGroup(click.Group):
    """Turns runtime errors into one-line messages with exit code 1 (``--debug``: traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
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



@click.group(cls=RobustkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(package_name="robustkit")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """robustkit: train classifiers of many kinds, attack them, defend them, report."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug



def _attach(modules: list[str]) -> None:
    for name in modules:
        register: Callable[[click.Group], None] = importlib.import_module(
            f"robustkit.cli.{name}").register
        register(main)


_attach(["train", "attack", "certify", "defend", "sweep", "report", "importer"])
