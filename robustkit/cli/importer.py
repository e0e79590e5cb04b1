"""``robustkit import``: store models made elsewhere (scikit-learn, ONNX, torch code).

Thin: :mod:`robustkit.importing` converts, checks and stores; this prints.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


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


def _common(fn: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed([
        click.option("--name", required=True, help="Name to store the model under."),
        click.option("--dataset", required=True, help="Dataset the model classifies."),
        click.option("--workdir", type=click.Path(file_okay=False), default="runs",
                     show_default=True, help="Workspace folder."),
        click.option("--data-root", type=click.Path(file_okay=False), default=None,
                     help="Folder with file-based datasets (default $ROBUSTKIT_DATA)."),
        click.option("--json", "as_json", is_flag=True, help="Print the record as JSON."),
    ]):
        fn = opt(fn)
    return fn


@import_group.command("sklearn")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_common
def sklearn_cmd(file: Path, **opts: Any) -> None:
    """Import a fitted scikit-learn classifier saved with skops.io.dump (never pickle)."""
    from robustkit.importing import import_sklearn

    _print(import_sklearn(file, name=opts["name"], dataset=opts["dataset"],
                          workdir=opts["workdir"], root=opts["data_root"]), opts["as_json"])


@import_group.command("onnx")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_common
def onnx_cmd(file: Path, **opts: Any) -> None:
    """Import an ONNX classifier (checked against onnxruntime to 1e-5)."""
    from robustkit.importing import import_onnx

    _print(import_onnx(file, name=opts["name"], dataset=opts["dataset"],
                       workdir=opts["workdir"], root=opts["data_root"]), opts["as_json"])


@import_group.command("torch")
@click.argument("builder")
@click.argument("weights", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_common
def torch_cmd(builder: str, weights: Path, **opts: Any) -> None:
    """Import a network: BUILDER is module:function returning it, WEIGHTS a safetensors
    state dict (loaded with strict=True). Loading imports BUILDER's module again."""
    from robustkit.importing import import_torch

    _print(import_torch(builder, weights, name=opts["name"], dataset=opts["dataset"],
                        workdir=opts["workdir"], root=opts["data_root"]), opts["as_json"])


def _print(rec: Any, as_json: bool) -> None:
    from robustkit.cli import emit_json

    if as_json:
        emit_json(rec.to_dict())
        return
    click.echo(f"imported {rec.kind} model {rec.name!r} -> {rec.path} (sha256 {rec.sha256[:12]}, "
               f"{rec.dataset} test accuracy {rec.test_accuracy:.4f}, {rec.check} "
               f"{rec.check_value:.3g})")
