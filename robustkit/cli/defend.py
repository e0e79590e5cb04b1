"""``robustkit defend`` (train a defended model, store it, score it) and ``robustkit score``
(score any stored model, or model + detector, with the gradient-masking sanity checks).

A defended model lives in ``<workdir>/<name>/`` like any model (group ``model``), with
the plain model it is compared with (group ``plain``), any detector/rectifier groups,
the per-epoch ``checkpoint/`` while training runs, and ``score.json`` after scoring.
"""
from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import torch

from robustkit import data as datasets
from robustkit import defenses, models, store
from robustkit.cli import emit_json, parse_params
from robustkit.cli.usage import FiniteFloat, refuse
from robustkit.defenses.checkpoint import CheckpointError

DEFAULT_ATTACKS = ("autoattack", "fgsm", "pgd", "uap")


def register(main: click.Group) -> None:
    """Attach ``defend`` and ``score`` to the ``robustkit`` group."""
    main.add_command(defend_cmd)
    main.add_command(score_cmd)


def _score_options(fn: Any) -> Any:
    opts = [
        click.option("--attack", "attacks", multiple=True,
                      help=f"Scoring attack, repeatable [default: {', '.join(DEFAULT_ATTACKS)}]"
                           "; fgsm, pgd and noise always run for the sanity checks."),
        click.option("--pgd-steps", type=click.IntRange(min=1), default=50, show_default=True),
        click.option("--pgd-restarts", type=click.IntRange(min=1), default=10,
                     show_default=True),
        click.option("--score-limit", type=click.IntRange(min=1), default=None,
                     help="Score on a stratified subset of this many test samples."),
        click.option("--fit-limit", type=click.IntRange(min=1), default=2000,
                     show_default=True, help="Training samples a UAP is fitted on."),
        click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text."),
        click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                     show_default=True),
        click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
                     default="runs", show_default=True, help="Workspace of stored models."),
        click.option("--data-root", type=click.Path(file_okay=False, path_type=Path),
                     default=None, help="Local data root [default: $ROBUSTKIT_DATA]."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


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
@_score_options
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
    plain, plain_seconds = _plain(family, mparams, tr, te, plain_name, opts, progress)
    try:
        res = defenses.defend(defense, family, tr.x, tr.y, eps=eps, model_params=mparams,
                              n_classes=tr.info.n_classes, seed=seed, device=opts["device"],
                              progress=progress, checkpoint=target / "checkpoint",
                              base=plain, **params)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc} (or rerun with --force to start over)") from None
    clean = models.accuracy(res.model, te.x, te.y)
    timing = {"train_seconds": res.seconds, "plain_seconds": plain_seconds,
              "time_ratio": res.seconds / plain_seconds if plain_seconds else None}
    _store(target, res, family, mparams, tr.info, seed, plain, clean, timing)
    out: dict[str, Any] = {"name": name, "model": family, "defense": defense,
                           "params": res.params, "dataset": dataset, "path": str(target),
                           "clean_accuracy": clean,
                           "plain_clean_accuracy": models.accuracy(plain, te.x, te.y),
                           **timing, "info": _jsonable(res.info)}
    if not no_score:
        system = _system(res.model, res.extras)
        out["score"] = _run_score(res.model, system, tr, te, [*score_eps] or [eps], opts,
                                  {"model": name, "defense": defense, **timing}, target)
    _print(out, opts["as_json"])


@click.command("score")
@click.option("--model", "name", required=True, help="A stored model name in --workdir.")
@click.option("--eps", type=FiniteFloat(0, 1), multiple=True,
              help="Budget, repeatable (the radius xi for universal attacks) [default: the "
                   "eps a defended model was trained at; required for other models].")
@click.option("--dataset", default=None, help="Dataset [default: the model's].")
@click.option("--no-detector", is_flag=True, help="Score the bare model even if a "
              "detector is stored beside it.")
@_score_options
def score_cmd(name: str, eps: tuple[float, ...], dataset: str | None, no_detector: bool,
              **opts: Any) -> None:
    """Score a stored model (or model + detector) with the sanity checks.

    A model stored with a detector (``defend --defense detector`` or ``prn``) is scored
    both bare and as a system: the ``system:*`` rows hold the system's accuracy (a
    rejected attacked input counts as defended, a rejected clean one as an error) and the
    detection AUC, against attacks on the bare classifier and adaptive ones (``+adaptive``).

    \b
    Example:
        robustkit score --model cnn-fgsmrs --attack pgd --attack uap --eps 0.1 --eps 0.3
    """
    try:
        target = store.find_model(opts["workdir"], name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from None
    model, meta = store.load(target)
    trained_eps = (meta.extra.get("defense_params") or {}).get("eps")
    if not eps:
        if trained_eps is None:
            raise click.UsageError(f"--eps is required: model {name!r} stores no training eps")
        eps = (float(trained_eps),)
    ds = dataset or meta.dataset or "digits"
    tr = datasets.load_dataset(ds, "train", root=opts["data_root"], seed=opts["seed"])
    te = datasets.load_dataset(ds, "test", root=opts["data_root"], seed=opts["seed"])
    system = None
    if not no_detector and (target / "detector.json").is_file():
        from robustkit.defenses.system import load_system

        system = load_system(target, model)
    info = {"model": name, "defense": meta.extra.get("defense")}
    info.update({k: meta.metrics[k] for k in ("train_seconds", "plain_seconds", "time_ratio")
                 if k in meta.metrics})
    out = {"name": name, "path": str(target), "dataset": ds,
           "score": _run_score(model, system, tr, te, list(eps), opts, info, target)}
    _print(out, opts["as_json"])


def _run_score(model: torch.nn.Module, system: Any, tr: datasets.Dataset,
               te: datasets.Dataset, eps: list[float], opts: dict[str, Any],
               info: dict[str, Any], target: Path) -> dict[str, Any]:
    from robustkit.defenses.score import score
    from robustkit.progress import bar

    x, y = te.x, te.y
    if opts["score_limit"] and opts["score_limit"] < len(y):
        x, y, _ = datasets.subset(te, opts["score_limit"], seed=opts["seed"])
    fit = datasets.subset(tr, opts["fit_limit"], seed=opts["seed"]) \
        if opts["fit_limit"] < len(tr.y) else tr
    ticker = bar(None, f"score {info.get('model')}", "attack calls")

    def on_result(attack: str, e: float | None, _: Any) -> None:
        ticker.update(1)
        ticker.set_postfix_str(attack if e is None else f"{attack} eps {e:g}")

    try:
        res = score(model, x, y, eps=eps, attacks=opts["attacks"] or DEFAULT_ATTACKS,
                    pgd_steps=opts["pgd_steps"], pgd_restarts=opts["pgd_restarts"],
                    fit_x=fit.x, fit_y=fit.y, detector=system, seed=opts["seed"],
                    device=models.resolve_device(opts["device"]), info=info,
                    on_result=on_result)
    finally:
        ticker.close()
    out = {"rows": res.rows, "checks": [c.__dict__ for c in res.checks],
           "possible_gradient_masking": res.possible_gradient_masking,
           "flags": res.flags(), "table": res.table()}
    store.atomic_write(target / "score.json",
                       json.dumps(_jsonable(out), indent=1, default=str).encode())
    return out


def _plain(family: str, mparams: dict[str, Any], tr: datasets.Dataset, te: datasets.Dataset,
           plain_name: str | None, opts: dict[str, Any], progress: bool
           ) -> tuple[torch.nn.Module, float | None]:
    if plain_name is not None:
        module, meta = store.load(_target(opts["workdir"], plain_name))
        if meta.family != family:
            raise ValueError(f"--plain {plain_name!r} is a {meta.family!r} model, not {family!r}")
        return module, meta.metrics.get("seconds")
    module, rec = models.train(family, (tr, te), seed=opts["seed"], device=opts["device"],
                               progress=progress, **mparams)
    return module, rec.seconds


def _store(target: Path, res: defenses.DefenseResult, family: str, mparams: dict[str, Any],
           info: Any, seed: int, plain: torch.nn.Module, clean: float,
           timing: dict[str, Any]) -> None:
    tensors = {k: v for k, v in res.info.items() if torch.is_tensor(v)}
    extra = {"defense": res.defense, "defense_params": _jsonable(res.params),
             "defense_info": _jsonable({k: v for k, v in res.info.items() if k not in tensors}),
             "history": _jsonable(list(res.history))}
    metrics = {"test_accuracy": clean, **{k: v for k, v in timing.items() if v is not None}}
    params = dict(models.create(family, **mparams).params)
    store.clear(target)  # what a replaced model had (say, a detector) must not outlive it
    store.save(plain, target, family=family, params=params, dataset=info, seed=seed,
               name="plain")
    if res.extras:
        from robustkit.defenses.system import DefendedSystem, save_system

        extras: dict[str, Any] = dict(res.extras)
        save_system(DefendedSystem(res.model, extras.get("detector"),
                                   extras.get("rectifier")), target)
    if tensors:
        store.save_tensors(target, "defense_state", tensors, meta={"defense": res.defense})
    # The model group is written last: its presence marks a complete defended model.
    store.save(res.model, target, family=family, params=params, dataset=info, seed=seed,
               metrics=metrics, extra=extra)
    shutil.rmtree(target / "checkpoint", ignore_errors=True)


def _system(model: torch.nn.Module, extras: Mapping[str, Any]) -> Any:
    if not extras.get("detector") and not extras.get("rectifier"):
        return None
    from robustkit.defenses.system import DefendedSystem

    return DefendedSystem(model, extras.get("detector"), extras.get("rectifier"))


def _target(workdir: Path, name: str) -> Path:
    try:
        return store.model_dir(workdir, name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--name/--model") from None


def _print(out: dict[str, Any], as_json: bool) -> None:
    if as_json:
        if "score" in out:
            out = {**out, "score": {k: v for k, v in out["score"].items() if k != "table"}}
        emit_json(_jsonable(out))
        return
    if "defense" in out:
        t, r = out["train_seconds"], out.get("time_ratio")
        click.echo(f"{out['name']}: {out['model']} + {out['defense']} on {out['dataset']}: "
                   f"clean accuracy {out['clean_accuracy']:.4f} (plain "
                   f"{out['plain_clean_accuracy']:.4f}), trained in {t:.1f} s"
                   + (f" = {r:.2f}x plain" if r else "") + f" -> {out['path']}")
        info = out["info"]
        if info.get("recoveries"):
            click.echo(f"catastrophic overfitting, recovered {info['recoveries']} time(s): "
                       "best epoch restored, alpha reduced, training went on")
        if info.get("stopped_on_collapse", info.get("catastrophic_overfitting")):
            click.echo(f"catastrophic overfitting at epoch {info['stopped_epoch']}: "
                       f"restored epoch {info['best_epoch']}")
    if "score" in out:
        click.echo(out["score"]["table"])


def _jsonable(obj: Any) -> Any:
    if torch.is_tensor(obj):
        return obj.tolist() if obj.numel() <= 16 else f"<tensor {tuple(obj.shape)}>"
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj
