"""``robustkit import``: store models made elsewhere (scikit-learn, ONNX, torch code).

Thin: :mod:`robustkit.importing` converts, checks and stores; this prints.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from robustkit import data as datasets
from robustkit import store
from robustkit.cli.usage import emit_json
from robustkit.importing import import_onnx, import_sklearn, import_torch
from robustkit.models.outputs import OUTPUTS
from robustkit.models.torch_model import check_builder


def register(main: click.Group) -> None:
    """Attach the ``import`` group to the ``robustkit`` group."""
    main.add_command(import_group)


@click.group("import")
def import_group() -> None:
    """Import a model made elsewhere into the workspace (then attack/score it by name).

    \b
    Example:
        robustkit import sklearn svc.skops --name svc --dataset digits
        robustkit attack --model svc --attack pgd --eps 0.1
    """


def _checked(check: Callable[[str], Any]) -> Callable[..., str]:
    """A click callback: ``check(value)``'s ValueError is a usage error (exit 2), found
    before any file or dataset is read."""

    def callback(ctx: click.Context, param: click.Parameter, value: str) -> str:
        try:
            check(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
        return value

    return callback


# The options every ``import`` subcommand takes, in the order ``--help`` lists them.
_OPTIONS = (
    click.option("--name", required=True, help="Name to store the model under.",
                 callback=_checked(lambda v: store.check_name(v, "model name"))),
    click.option("--dataset", required=True, help="Dataset the model classifies.",
                 callback=_checked(datasets.check_name)),
    click.option("--force", is_flag=True, help="Replace a model stored under that name."),
    click.option("--workdir", type=click.Path(file_okay=False), default="runs",
                 show_default=True, help="Workspace folder."),
    click.option("--data-root", type=click.Path(file_okay=False), default=None,
                 help="Folder with file-based datasets (default $ROBUSTKIT_DATA)."),
    click.option("--json", "as_json", is_flag=True, help="Print the record as JSON."),
)
_FILE = click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
_OUTPUTS = click.option(
    "--outputs", type=click.Choice(OUTPUTS), default="logits", show_default=True,
    help="What the network returns: logits, or probabilities (it ends in a softmax; "
         "their log is stored, since attacks on probabilities are weaker).")


def _import_command(name: str, *arguments: Callable[..., Any]
                    ) -> Callable[[Callable[..., Any]], click.Command]:
    """Decorator: ``robustkit import NAME`` with the positional ``arguments`` and the shared
    options. The function takes the arguments plus ``name``, ``dataset``, ``workdir`` and
    ``root`` (from ``--data-root``) and returns the stored record, which is printed."""

    def deco(fn: Callable[..., Any]) -> click.Command:
        @functools.wraps(fn)
        def run(*, data_root: str | None, as_json: bool, **params: Any) -> None:
            _print(fn(**params, root=data_root), as_json)

        cmd: Callable[..., Any] = run
        for decorator in reversed((*arguments, *_OPTIONS)):
            cmd = decorator(cmd)
        return import_group.command(name)(cmd)

    return deco


@_import_command("sklearn", _FILE)
def sklearn_cmd(file: Path, **store: Any) -> Any:
    """Import a fitted scikit-learn classifier saved with skops.io.dump (never pickle)."""
    return import_sklearn(file, **store)


@_import_command("onnx", _FILE, _OUTPUTS)
def onnx_cmd(file: Path, **store: Any) -> Any:
    """Import an ONNX classifier (checked against onnxruntime to 1e-5)."""
    return import_onnx(file, **store)


@_import_command("torch", click.argument("builder", callback=_checked(check_builder)),
                 click.argument("weights", type=click.Path(exists=True, dir_okay=False,
                                                           path_type=Path)), _OUTPUTS)
def torch_cmd(builder: str, weights: Path, **store: Any) -> Any:
    """Import a network: BUILDER is module:function returning it, WEIGHTS a safetensors
    state dict (loaded with strict=True). Loading imports BUILDER's module again."""
    return import_torch(builder, weights, **store)


def _print(rec: Any, as_json: bool) -> None:
    if as_json:
        emit_json(rec.to_dict())
        return
    click.echo(f"imported {rec.kind} model {rec.name!r} -> {rec.path} (sha256 {rec.sha256[:12]}, "
               f"{rec.dataset} test accuracy {rec.test_accuracy:.4f}, {rec.check} "
               f"{rec.check_value:.3g})")
