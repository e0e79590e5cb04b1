"""``robustkit datasets | train | models list/show``: train models into a workspace.

Models are stored through :mod:`robustkit.store` in ``<workdir>/<name>/``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click

from robustkit import data as datasets
from robustkit import models, store
from robustkit.cli.usage import dataset_name, emit_json, parse_params, refuse

DEFAULT_WORKDIR = "runs"
workdir_option = click.option(
    "--workdir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_WORKDIR,
    show_default=True, help="Workspace folder holding one subfolder per model.")
json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print machine-readable JSON instead of text.")
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
data_root_option = click.option(
    "--data-root", type=click.Path(file_okay=False, path_type=Path), default=None,
    help=f"Local data root for mnist, fashion-mnist, cifar10, folder:/table: datasets "
         f"[default: ${datasets.DATA_ENV}].")


def register(main: click.Group) -> None:
    """Attach this module's commands to the ``robustkit`` group."""
    for cmd in (datasets_cmd, train_cmd, models_group):
        main.add_command(cmd)


@click.command("datasets")
@data_root_option
@json_option
def datasets_cmd(data_root: Path | None, as_json: bool) -> None:
    """List the datasets, their shapes and classes, and whether their files are present."""
    rows = [datasets.describe(name, data_root) for name in datasets.names()]
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        r["shape"] = "x".join(map(str, r["input_shape"]))
        r["status"] = ("built-in" if r["builtin"] else "found" if r["available"]
                       else f"missing: {r['location']}" if r["location"]
                       else "needs --data-root")
    _table(rows, ["name", "shape", "n_classes", "status", "description"])
    click.echo("your own data, PATH under the data root: folder:PATH[,size=32][,channels=3] "
               "(PATH/{train,test}/<class>/*.png), table:PATH[,label=label] "
               "(PATH/{train,test}.csv or .parquet)")


def check_params(family: str, params: dict[str, Any]) -> dict[str, Any]:
    """Validate ``--param`` keys and values for ``family``; any bad one is a usage error
    (exit 2) listing every problem and the valid keys."""
    refuse(models.check_params(family, params))
    return dict(models.create(family, **params).params)


@click.command("train")
@click.option("--model", "family", required=True, type=click.Choice(models.names()),
              help="Model family.")
@click.option("--param", "pairs", multiple=True, metavar="KEY=VALUE",
              help="Family parameter, repeatable; values parse as JSON (0.5, [64,32], true).")
@click.option("--dataset", default="digits", show_default=True, callback=dataset_name,
              help=f"Dataset to train and test on: {', '.join(datasets.names())}, or your "
                   f"own as folder:PATH[,size=32] or table:PATH[,label=label] under "
                   f"--data-root.")
@click.option("--name", default=None, help="Model name in the workspace [default: MODEL-DATASET].")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**32 - 1),
              help="Seed of split and training.")
@click.option("--device", default="auto", show_default=True,
              type=click.Choice(["auto", "cpu", "cuda"]), help="Where to train.")
@data_root_option
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Train on a stratified subset of this many samples.")
@workdir_option
@click.option("--force", is_flag=True, help="Replace an existing model of that name.")
@quiet_option
@json_option
def train_cmd(family: str, pairs: tuple[str, ...], dataset: str, name: str | None, seed: int,
              device: str, data_root: Path | None, limit: int | None, workdir: Path,
              force: bool, quiet: bool, as_json: bool) -> None:
    """Train a model and save it to WORKDIR/NAME.

    Example: robustkit train --model svm --param kernel=rbf --param gamma=0.5 --name svm-rbf
    """
    params = parse_params(pairs)
    check_params(family, params)
    name = name or re.sub(r"[^A-Za-z0-9._-]+", "-", f"{family}-{dataset}").strip("-.")
    try:
        target = store.model_dir(workdir, name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--name") from None
    if (target / "model.json").exists() and not force:
        raise FileExistsError(f"model {name!r} already exists in {workdir}; pass --force to "
                              f"replace it or choose another --name")
    tr = datasets.load_dataset(dataset, "train", root=data_root, seed=seed, limit=limit)
    te = datasets.load_dataset(dataset, "test", root=data_root, seed=seed)
    module, rec = models.train(family, (tr, te), seed=seed, device=device,
                               progress=_progress(quiet), **params)
    store.clear(target)  # what a replaced model had (say, a detector) must not outlive it
    store.save(module, target, record=rec, dataset=tr.info)
    out = {"name": name, "model": family, "params": rec.params, "dataset": dataset,
           "seed": seed, "n_train": rec.n_train, "n_test": rec.n_test,
           "train_accuracy": rec.train_accuracy, "test_accuracy": rec.test_accuracy,
           "seconds": rec.seconds, "device": rec.device, "path": str(target)}
    if tr.info.scale is not None:
        out.update(features=list(tr.info.features), clipped_test_values=te.info.clipped)
    if as_json:
        emit_json(out)
        return
    click.echo(f"{name}: {family} on {dataset}: train accuracy {rec.train_accuracy:.4f}, "
               f"test accuracy {rec.test_accuracy:.4f} ({rec.seconds:.1f} s, {rec.device})"
               f" -> {target}")
    if tr.info.scale is not None:
        click.echo(f"{len(tr.info.features)} features scaled to [0, 1] with the training "
                   f"min/max (stored with the model); {te.info.clipped} test values outside "
                   f"that range clipped")


@click.group("models")
def models_group() -> None:
    """List and inspect the models of a workspace."""


@models_group.command("list")
@workdir_option
@json_option
def models_list(workdir: Path, as_json: bool) -> None:
    """List the models in WORKDIR."""
    entries = store.list_models(workdir)
    rows = [_summary(e) for e in entries]
    if as_json:
        emit_json(rows)
    elif not rows:
        click.echo(f"no models in {workdir} (train one with `robustkit train`)")
    else:
        _table(rows, ["name", "model", "dataset", "test_accuracy", "created", "status"])


def _summary(e: store.ModelEntry) -> dict[str, Any]:
    m, error = e.meta, e.error
    if error is None:  # the JSON reads; are the tensors still the ones it describes?
        try:
            store.verify(e.path)
        except (store.StoreError, OSError) as exc:
            error = str(exc)
    return {"name": e.name, "path": e.path, "model": m.family if m else None,
            "dataset": m.dataset if m else None, "params": m.params if m else None,
            "test_accuracy": m.metrics.get("test_accuracy") if m else None,
            "created": m.created if m else None, "error": error,
            "status": "ok" if error is None else f"broken: {_short(error, e.path)}"}


def _short(error: str, path: str) -> str:
    """The reason without the folder it is about (the row names it already)."""
    return error.replace(f"{path}/", "").replace(f"{path}: ", "")


@models_group.command("show")
@click.argument("name")
@workdir_option
@json_option
def models_show(name: str, workdir: Path, as_json: bool) -> None:
    """Show everything stored about model NAME."""
    try:
        target = store.find_model(workdir, name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    # Exit 1 with the reason when the model is broken (missing, truncated or replaced
    # tensors, inconsistent metadata): a model that cannot be loaded is not shown as fine.
    meta = store.verify(target).to_dict()
    if as_json:
        emit_json({"model_name": name, **meta})
        return
    click.echo(f"{name} ({target})")
    for key in ("family", "dataset", "params", "arch", "input_shape", "classes", "seed",
                "metrics", "extra", "versions", "sha256", "created"):
        click.echo(f"  {key + ':':13} {_fmt(meta[key])}")


def _progress(quiet: bool) -> bool:
    # A bar on a terminal, else a status line every few seconds (robustkit.progress).
    return not quiet


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return "" if value is None else str(value)


def _cell(col: str, value: Any) -> str:
    if isinstance(value, float) and col.endswith("accuracy"):
        return f"{value:.4f}"
    if isinstance(value, float) and col == "seconds":
        return f"{value:.1f}"
    return _fmt(value)


def _table(rows: list[dict[str, Any]], cols: list[str]) -> None:
    cells = [[_cell(c, r.get(c)) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(cols, widths)).rstrip())
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
