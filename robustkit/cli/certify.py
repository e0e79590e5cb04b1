"""``robustkit certify``: certified accuracy beside attacked accuracy, per eps.

Per eps it prints the bracket [certified, attacked] in which the true robust accuracy
lies, the share of inputs decided exactly (certified, or broken by a verified witness),
the certificate used and the seconds of the certificate and of the attack (an eps-grid
attack such as AutoAttack runs once for all eps: its time shows on every row). A sample certified robust that the attack breaks
stops the command with exit code 1 (the certificate is unsound: a bug).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from robustkit.cli.attack_files import write_csv
from robustkit.cli.model_arg import model_or_default
from robustkit.cli.usage import FiniteFloat, dataset_name, emit_json, parse_params

COLUMNS = ("eps", "norm", "n", "method", "smoothed", "attack", "certified_accuracy",
           "attacked_accuracy", "upper", "exact_share", "certified", "broken_by_certificate",
           "broken_by_attack", "unknown", "certify_seconds", "attack_seconds", "device")


def register(main: click.Group) -> None:
    """Attach the ``certify`` command to the ``robustkit`` group."""
    main.add_command(certify_cmd)


@click.command("certify")
@click.option("--model", "model_name", required=True,
              help="A stored model name in --workdir, or a family name (trains a default one).")
@click.option("--eps", "eps", type=FiniteFloat(min=0), multiple=True, required=True,
              help="Radius (repeat for several; one certificate run covers them all).")
@click.option("--norm", type=click.Choice(["linf", "l2"]), default="linf", show_default=True)
@click.option("--method", default="auto", show_default=True,
              help="A certificate name (an unknown name lists them) or auto: the tightest "
                   "that applies to the model; randomized smoothing only when named.")
@click.option("--time-limit", type=FiniteFloat(min=0, min_open=True), default=30.0,
              show_default=True, help="Seconds per sample for certificates that search "
                                      "(MILP, branch and bound); then 'unknown'.")
@click.option("--attack", "attack_name", default="autoattack", show_default=True,
              help="The attack giving the upper bound (a fixed-budget attack), or none.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Certificate parameter (repeatable).")
@click.option("--attack-param", "attack_params", multiple=True, metavar="KEY=VALUE",
              help="Attack hyperparameter (repeatable), e.g. --attack-param version=fast.")
@click.option("--dataset", default=None, callback=lambda c, p, v: None if v is None else
              dataset_name(c, p, v), help="Dataset (default: the model's, else digits).")
@click.option("--split", type=click.Choice(["train", "test"]), default="test", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Certify a stratified subset of this many samples.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@click.option("--workdir", type=click.Path(file_okay=False), default="runs", show_default=True)
@click.option("--data-root", type=click.Path(file_okay=False), default=None,
              help="Folder with file-based datasets (default $ROBUSTKIT_DATA).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Write the rows to this CSV file.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def certify_cmd(model_name: str, eps: tuple[float, ...], norm: str, method: str,
                time_limit: float, attack_name: str, params: tuple[str, ...],
                attack_params: tuple[str, ...], dataset: str | None, split: str,
                limit: int | None, device: str, workdir: str, data_root: str | None,
                seed: int, out: str | None, as_json: bool) -> None:
    """Certify a model at each --eps: the bracket [certified, attacked] and the exact share.

    \b
    Example:
        robustkit certify --model linear --eps 0.05 --eps 0.1
        robustkit certify --model my-mlp --eps 0.02 --time-limit 30 --limit 100 --json
    """
    from robustkit import certify, load_dataset
    from robustkit.certify.bracket import NO_ATTACK, SMOOTHED_NOTE, bracket
    from robustkit.models import resolve_device

    cert_kw, attack_kw = parse_params(params), parse_params(attack_params)
    if method != "auto":
        try:
            certify.get(method)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--method") from None
    if attack_name != NO_ATTACK:
        _check_attack(attack_name, norm, attack_kw)
    dev = resolve_device(device)
    model, label, model_dataset = model_or_default(model_name, workdir, dataset, data_root, seed, dev)
    if method != "auto":
        why = certify.get(method).applies(model, norm)
        if why is not None:
            raise click.BadParameter(f"certificate {method!r} does not apply to this model "
                                     f"in {norm}: {why}", param_hint="--method")
    ds_name = dataset or model_dataset or "digits"
    data = load_dataset(ds_name, split, root=data_root, seed=seed, limit=limit)
    found = bracket(model, data.x.to(dev), data.y.to(dev), eps=list(eps), norm=norm,
                    attack=attack_name, method=method, time_limit=time_limit,
                    attack_params=attack_kw, seed=seed, **cert_kw)
    rows = [_clean({**b.row(), "device": str(dev)}) for b in found]
    if out:
        write_csv(Path(out), rows, COLUMNS)
    if as_json:
        emit_json(rows)
        return
    click.echo(f"certify {label}, {ds_name}/{split} ({rows[0]['n']} samples, {norm}, "
               f"attack {attack_name}, {dev})")
    click.echo(table(rows))
    if any(r["smoothed"] for r in rows):
        click.echo(f"note: {rows[0]['method']} {SMOOTHED_NOTE}; no exact share, and the "
                   f"two numbers are not a bracket of one classifier")
    reasons = sorted({r for b in found for r in b.certificate.reasons if r})
    for why in reasons[:3]:
        click.echo(f"unknown: {why}")
    if out:
        click.echo(f"wrote {out}")


def _check_attack(name: str, norm: str, kw: dict[str, Any]) -> None:
    """Usage errors of --attack and --attack-param, before any model or data is loaded."""
    from robustkit.certify.bracket import check_attack

    try:
        check_attack(name, norm, kw)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--attack") from None


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as an aligned text table (what the command prints)."""
    head = ("eps", "certified", "attacked", "bracket", "exact", "method", "certify_s",
            "attack_s")
    cells = []
    for r in rows:
        lo, hi = r["certified_accuracy"], r["upper"]
        span = "n/a" if hi is None or r["smoothed"] else f"[{lo:.3f}, {hi:.3f}]"
        cells.append((f"{r['eps']:g}", f"{lo:.3f}", "n/a" if r["attacked_accuracy"] is None
                      else f"{r['attacked_accuracy']:.3f}", span, _pct(r["exact_share"]),
                      r["method"], f"{r['certify_seconds']:.3g}", f"{r['attack_seconds']:.3g}"))
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(c, widths)) for c in cells]
    return "\n".join(lines)
