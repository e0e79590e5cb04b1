"""``robustkit score``: score any stored model, or model + detector, with the
gradient-masking sanity checks; the scoring options and output ``defend`` shares.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click
import torch

from robustkit import data as datasets
from robustkit import models, store
from robustkit.cli.usage import FiniteFloat, emit_json
from robustkit.defenses import score as scoring
from robustkit.defenses.system import load_system
from robustkit.progress import bar

DEFAULT_ATTACKS = ("autoattack", "fgsm", "pgd", "uap")


def score_options(fn: Any) -> Any:
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


@click.command("score")
@click.option("--model", "name", required=True, help="A stored model name in --workdir.")
@click.option("--eps", type=FiniteFloat(0, 1), multiple=True,
              help="Budget, repeatable (the radius xi for universal attacks) [default: the "
                   "eps a defended model was trained at; required for other models].")
@click.option("--dataset", default=None, help="Dataset [default: the model's].")
@click.option("--no-detector", is_flag=True, help="Score the bare model even if a "
              "detector is stored beside it.")
@score_options
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
        system = load_system(target, model)
    info = {"model": name, "defense": meta.extra.get("defense")}
    clocks = ("train_seconds", "plain_seconds", "train_cpu_seconds", "plain_cpu_seconds")
    info.update({k: meta.metrics[k] for k in clocks if k in meta.metrics})
    out = {"name": name, "path": str(target), "dataset": ds,
           "score": run_score(model, system, tr, te, list(eps), opts, info, target)}
    print_result(out, opts["as_json"])


def run_score(model: torch.nn.Module, system: Any, tr: datasets.Dataset,
               te: datasets.Dataset, eps: list[float], opts: dict[str, Any],
               info: dict[str, Any], target: Path) -> dict[str, Any]:
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
        res = scoring.score(model, x, y, eps=eps, attacks=opts["attacks"] or DEFAULT_ATTACKS,
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
                       json.dumps(jsonable(out), indent=1, default=str).encode())
    return out


def print_result(out: dict[str, Any], as_json: bool) -> None:
    if as_json:
        if "score" in out:
            out = {**out, "score": {k: v for k, v in out["score"].items() if k != "table"}}
        emit_json(jsonable(out))
        return
    if "defense" in out:
        click.echo(f"{out['name']}: {out['model']} + {out['defense']} on {out['dataset']}: "
                   f"clean accuracy {out['clean_accuracy']:.4f} (plain "
                   f"{out['plain_clean_accuracy']:.4f}), trained in {scoring.cost_line(out)} "
                   f"-> {out['path']}")
        info = out["info"]
        if info.get("recoveries"):
            click.echo(f"catastrophic overfitting, recovered {info['recoveries']} time(s): "
                       "best epoch restored, alpha reduced, training went on")
        if info.get("stopped_on_collapse", info.get("catastrophic_overfitting")):
            click.echo(f"catastrophic overfitting at epoch {info['stopped_epoch']}: "
                       f"restored epoch {info['best_epoch']}")
    if "score" in out:
        click.echo(out["score"]["table"])


def jsonable(obj: Any) -> Any:
    if torch.is_tensor(obj):
        return obj.tolist() if obj.numel() <= 16 else f"<tensor {tuple(obj.shape)}>"
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj
