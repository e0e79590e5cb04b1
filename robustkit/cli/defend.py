"""``robustkit defend``: train a defended model, store it, score it (``robustkit score``,
in :mod:`robustkit.cli.score`, scores any stored model).

A defended model lives in ``<workdir>/<name>/`` like any model (group ``model``), with
the plain model it is compared with (group ``plain``), any detector/rectifier groups,
the per-epoch ``checkpoint/`` while training runs, and ``score.json`` after scoring.
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import torch

from robustkit import data as datasets
from robustkit import defenses, models, store
from robustkit.cli.score import jsonable, print_result, run_score, score_cmd, score_options
from robustkit.cli.usage import FiniteFloat, parse_params, refuse
from robustkit.defenses.checkpoint import CheckpointError
from robustkit.defenses.score import training_cost
from robustkit.defenses.system import DefendedSystem, save_system


def register(main: click.Group) -> None:
    """Attach ``defend`` and ``score`` to the ``robustkit`` group."""
    main.add_command(defend_cmd)
    main.add_command(score_cmd)


@click.command("defend")
@click.option("--model", "family", required=True, type=click.Choice(models.names()),
              help="Model family to train.")
@click.option("--defense", required=True, type=click.Choice(defenses.names()),
              help="Defense to train with.")
@click.option("--eps", type=FiniteFloat(0, 1, min_open=True), required=True,
              help="Linf budget the defense trains against.")
@click.option("--dataset", default="digits", show_default=True,
              type=click.Choice(datasets.names()))
@click.option("--name", default=None, help="Stored name [default: MODEL-DEFENSE-DATASET].")
@click.option("--param", "pairs", multiple=True, metavar="KEY=VALUE",
              help="Defense hyperparameter, repeatable (values parse as JSON).")
@click.option("--model-param", "model_pairs", multiple=True, metavar="KEY=VALUE",
              help="Model family parameter, repeatable.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Training epochs (gradient-trained families).")
@click.option("--plain", "plain_name", default=None,
              help="Reuse this stored plain model as baseline instead of training one.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Train on a stratified subset of this many samples.")
@click.option("--score-eps", type=FiniteFloat(0, 1), multiple=True,
              help="Scoring budgets, repeatable [default: --eps].")
@click.option("--no-score", is_flag=True, help="Train and store only.")
@click.option("--force", is_flag=True, help="Replace an existing model of that name.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@score_options
def defend_cmd(family: str, defense: str, eps: float, dataset: str, name: str | None,
               pairs: tuple[str, ...], model_pairs: tuple[str, ...], epochs: int | None,
               plain_name: str | None, limit: int | None, score_eps: tuple[float, ...],
               no_score: bool, force: bool, quiet: bool, **opts: Any) -> None:
    """Train a defended model, store it in WORKDIR/NAME and print its score table.

    \b
    Example:
        robustkit defend --model cnn --defense fgsm_rs --eps 0.3 --dataset mnist \\
            --name cnn-fgsmrs --param lr=0.005 --epochs 10
    """
    params, mparams = parse_params(pairs), parse_params(model_pairs)
    if epochs is not None:
        mparams["epochs"] = epochs
    refuse(models.check_params(family, mparams), "--model-param")
    refuse(defenses.get(defense).problems(family, params))
    name = name or f"{family}-{defense}-{dataset}"
    target = _target(opts["workdir"], name)
    if (target / "model.json").exists() and not force:
        raise FileExistsError(f"model {name!r} already exists in {opts['workdir']}; pass "
                              "--force to replace it or choose another --name")
    if force:  # start over: also the checkpoint an interrupted or other run left
        shutil.rmtree(target / "checkpoint", ignore_errors=True)
    # A bar on a terminal, else a status line every few seconds (robustkit.progress).
    seed, root, progress = opts["seed"], opts["data_root"], not quiet
    tr = datasets.load_dataset(dataset, "train", root=root, seed=seed, limit=limit)
    te = datasets.load_dataset(dataset, "test", root=root, seed=seed)
    plain, plain_seconds, plain_cpu = _plain(family, mparams, tr, te, plain_name, opts, progress)
    cpu0 = time.process_time()
    try:
        res = defenses.defend(defense, family, tr.x, tr.y, eps=eps, model_params=mparams,
                              n_classes=tr.info.n_classes, seed=seed, device=opts["device"],
                              progress=progress, checkpoint=target / "checkpoint",
                              base=plain, **params)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc} (or rerun with --force to start over)") from None
    clean = models.accuracy(res.model, te.x, te.y)
    # Process CPU time of this run (a resumed run counts its own share only): the wall
    # time of a shared machine measures the contention more than the work.
    timing = training_cost({"train_seconds": res.seconds, "plain_seconds": plain_seconds,
                            "train_cpu_seconds": time.process_time() - cpu0,
                            "plain_cpu_seconds": plain_cpu})
    _store(target, res, family, mparams, tr.info, seed, plain, clean, timing)
    out: dict[str, Any] = {"name": name, "model": family, "defense": defense,
                           "params": res.params, "dataset": dataset, "path": str(target),
                           "clean_accuracy": clean,
                           "plain_clean_accuracy": models.accuracy(plain, te.x, te.y),
                           **timing, "info": jsonable(res.info)}
    if not no_score:
        system = _system(res.model, res.extras)
        out["score"] = run_score(res.model, system, tr, te, [*score_eps] or [eps], opts,
                                  {"model": name, "defense": defense, **timing}, target)
    print_result(out, opts["as_json"])


def _plain(family: str, mparams: dict[str, Any], tr: datasets.Dataset, te: datasets.Dataset,
           plain_name: str | None, opts: dict[str, Any], progress: bool
           ) -> tuple[torch.nn.Module, float | None, float | None]:
    """The plain model, its training wall seconds and process CPU seconds (None when a
    reused model's store does not say)."""
    if plain_name is not None:
        module, meta = store.load(_target(opts["workdir"], plain_name))
        if meta.family != family:
            raise ValueError(f"--plain {plain_name!r} is a {meta.family!r} model, not {family!r}")
        return module, meta.metrics.get("seconds"), meta.metrics.get("cpu_seconds")
    cpu0 = time.process_time()
    module, rec = models.train(family, (tr, te), seed=opts["seed"], device=opts["device"],
                               progress=progress, **mparams)
    return module, rec.seconds, time.process_time() - cpu0


def _store(target: Path, res: defenses.DefenseResult, family: str, mparams: dict[str, Any],
           info: Any, seed: int, plain: torch.nn.Module, clean: float,
           timing: dict[str, Any]) -> None:
    tensors = {k: v for k, v in res.info.items() if torch.is_tensor(v)}
    extra = {"defense": res.defense, "defense_params": jsonable(res.params),
             "defense_info": jsonable({k: v for k, v in res.info.items() if k not in tensors}),
             "history": jsonable(list(res.history))}
    metrics = {"test_accuracy": clean, **{k: v for k, v in timing.items()
                                          if isinstance(v, (int, float))}}
    params = dict(models.create(family, **mparams).params)
    store.clear(target)  # what a replaced model had (say, a detector) must not outlive it
    store.save(plain, target, family=family, params=params, dataset=info, seed=seed,
               name="plain")
    if res.extras:
        extras: dict[str, Any] = dict(res.extras)
        save_system(DefendedSystem(res.model, extras.get("detector"),
                                   extras.get("rectifier")), target)
    if tensors:
        store.save_tensors(target, "defense_state", tensors, meta={"defense": res.defense})
    # The model group is written last: its presence marks a complete defended model.
    store.save(res.model, target, family=family, params=params, dataset=info, seed=seed,
               metrics=metrics, extra=extra)
    shutil.rmtree(target / "checkpoint", ignore_errors=True)


def _target(workdir: Path, name: str) -> Path:
    try:
        return store.model_dir(workdir, name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--name/--model") from None




def _system(model: torch.nn.Module, extras: Mapping[str, Any]) -> Any:
    if not extras.get("detector") and not extras.get("rectifier"):
        return None
    return DefendedSystem(model, extras.get("detector"), extras.get("rectifier"))
