"""``robustkit attack``: evaluate one attack on one model at one or more eps, print a table.

The model is a stored model (``<workdir>/<NAME>``, see ``robustkit train``) or a family
name, in which case a default model of that family is trained on the fly (not stored).
Universal attacks also write, per eps, ``v`` (safetensors + JSON) and a PNG of v with a
few perturbed test images labelled clean -> adversarial.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import click
import torch

from robustkit.cli.train import _dataset_name
from robustkit.cli.usage import FiniteFloat, refuse

TABLE = ("eps", "clean_accuracy", "robust_accuracy", "success_rate", "fooling_rate",
         "l2_median", "linf_median", "seconds")
N_GALLERY = 8


def register(main: click.Group) -> None:
    """Attach the ``attack`` command to the ``robustkit`` group."""
    main.add_command(attack)


@click.command("attack")
@click.option("--model", "model_name", required=True,
              help="A stored model name in --workdir, or a family name (trains a default one).")
@click.option("--attack", "attack_name", required=True,
              help="An attack name (fgsm, fgm, pgd, deepfool, uap, ...; an unknown name "
                   "lists them all) or foolbox:<AttackName>, e.g. foolbox:LinfPGD.")
@click.option("--eps", "eps", type=FiniteFloat(min=0), multiple=True, required=True,
              help="Budget (repeat for several); for universal attacks the radius xi.")
@click.option("--dataset", default=None, callback=lambda c, p, v: None if v is None else
              _dataset_name(c, p, v),
              help="Dataset (default: the model's, else digits): a built-in name, "
                   "folder:PATH or table:PATH.")
@click.option("--split", type=click.Choice(["train", "test"]), default="test", show_default=True)
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Attack hyperparameter (repeatable), e.g. --param steps=20.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@click.option("--workdir", type=click.Path(file_okay=False), default="runs", show_default=True,
              help="Workspace holding stored models.")
@click.option("--data-root", type=click.Path(file_okay=False), default=None,
              help="Folder with file-based datasets (default $ROBUSTKIT_DATA).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Evaluate a stratified subset of this many samples.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1024, show_default=True)
@click.option("--stream", is_flag=True,
              help="Read the data in batches of --batch-size (image folders lazily): memory "
                   "bounded by the batch, not the dataset; the same rows.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Write the rows to this CSV file.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def attack(model_name: str, attack_name: str, eps: tuple[float, ...], dataset: str | None,
           split: str, params: tuple[str, ...], device: str, workdir: str,
           data_root: str | None, limit: int | None, batch_size: int, stream: bool, seed: int,
           out: str | None, as_json: bool) -> None:
    """Attack a model at each --eps and report robust accuracy, rates, norms and speed.

    \b
    Example:
        robustkit attack --model mlp --attack fgsm --eps 0.05 --eps 0.1
        robustkit attack --model svm-rbf --attack pgd --eps 0.1 --param steps=20 --json
    """
    from robustkit import attacks, load_dataset
    from robustkit.cli import emit_json, parse_params
    from robustkit.data import describe_eps, eps_in_units
    from robustkit.evaluate import COLUMNS, evaluate
    from robustkit.models import resolve_device
    from robustkit.progress import bar

    kw = parse_params(params)
    try:
        spec = attacks.get(attack_name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--attack") from None
    # every --param problem (unknown key, bad value) before any model or data is loaded
    refuse(spec.check(kw))
    dev = resolve_device(device)
    model, model_label, model_dataset = _model(model_name, workdir, dataset, data_root, seed,
                                               dev)
    ds_name = dataset or model_dataset or "digits"
    n = None
    if not stream:
        data = load_dataset(ds_name, split, root=data_root, seed=seed, limit=limit)
        n = len(data.y)
    vs: dict[float, torch.Tensor] = {}
    total = None if spec.kind == "universal" or n is None else n * (
        1 if spec.kind == "minimal" else len(eps))
    ticker = bar(total, f"attack {spec.name}", "samples")

    def keep_v(e: float | None, res: Any) -> None:
        if e is not None and "v" in res.info:
            vs[e] = torch.as_tensor(res.info["v"]).detach().cpu()
        if spec.kind != "universal":
            ticker.update(len(res.x_adv))
        ticker.set_postfix_str("minimal perturbations" if e is None else f"eps {e:g}")

    try:
        if stream:
            data, rows = _stream_rows(spec, model, ds_name, split, data_root, seed, limit,
                                      batch_size, dev, keep_v, list(eps), kw)
        else:
            fit: dict[str, Any] = {}
            if spec.kind == "universal":
                train = load_dataset(ds_name, "train", root=data_root, seed=seed)
                fit = {"fit_x": train.x, "fit_y": train.y}
            rows = evaluate(model, spec, data.x, data.y, eps=list(eps), batch_size=batch_size,
                            device=dev, seed=seed, on_result=keep_v, **fit, **kw)
    finally:
        ticker.close()
    rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in rows]
    units = _units(model_name, workdir, data.info)
    if units is not None:
        rows = [{**r, "eps_original": dict(zip(units[0], eps_in_units(r["eps"], units[1])))}
                for r in rows]
    if out:
        _write_csv(Path(out), rows, COLUMNS)
    saved = [_save_universal(v, e, spec.name, model_name, model, data, out, workdir, kw)
             for e, v in vs.items()]
    if as_json:
        emit_json(rows)
        return
    click.echo(f"{spec.name} on {model_label}, {ds_name}/{split} ({rows[0]['n']} samples, "
               f"{rows[0]['device']})")
    click.echo(_table(rows))
    if units is not None:
        click.echo("\n".join(describe_eps(list(eps), *units)))
    for path in ([out] if out else []) + [p for pair in saved for p in pair]:
        click.echo(f"wrote {path}")


def _model(name: str, workdir: str, dataset: str | None, data_root: str | None, seed: int,
           dev: torch.device) -> tuple[torch.nn.Module, str, str | None]:
    """Load stored model ``name`` or train a default one of family ``name``."""
    from robustkit import models, store

    try:
        folder = store.find_model(workdir, name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from None
    except FileNotFoundError as exc:
        missing = str(exc)
    else:
        module, meta = store.load(folder, device=dev)
        return module, f"{name} ({meta.family}, stored in {folder})", meta.dataset
    if name in models.names():
        ds = dataset or "digits"
        click.echo(f"no stored model {name!r} in {workdir}: training a default {name!r} on "
                   f"{ds} (not stored)", err=True)
        module, rec = models.train(name, ds, seed=seed, device=dev, root=data_root)
        label = f"{name} (default, trained now, test accuracy {rec.test_accuracy:.3f})"
        return module.to(dev), label, ds
    raise click.BadParameter(f"{missing}; neither a stored model nor a model family "
                             f"({', '.join(models.names())})", param_hint="--model")


def _stream_rows(spec: Any, model: torch.nn.Module, name: str, split: str,
                 root: str | None, seed: int, limit: int | None, batch_size: int,
                 dev: torch.device, on_result: Any, eps: list[float],
                 params: dict[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
    """Rows of ``evaluate_stream`` over lazily read batches (a universal v fitted on the
    streamed train split), and the first few inputs as a Dataset (for the PNG of v)."""
    from robustkit.data import Dataset, iter_batches
    from robustkit.evaluate_stream import evaluate_stream

    batches = iter_batches(name, split, root, batch_size=batch_size, seed=seed, limit=limit)
    fit = iter_batches(name, "train", root, batch_size=batch_size, seed=seed) \
        if spec.kind == "universal" else None
    rows = evaluate_stream(model, spec, batches, eps=eps, device=dev, fit=fit, seed=seed,
                           on_result=on_result, **params)
    x, y = batches.take(list(range(min(N_GALLERY, batches.n))))
    return Dataset(x, y, batches.info), rows


def _units(name: str, workdir: str, info: Any) -> tuple[tuple[str, ...], Any] | None:
    """Feature names and training (min, max) of a table model: the stored ones (checked
    against the data's), else the data's; None for data that is not a table."""
    from robustkit import store
    from robustkit.data import scale_from_doc

    folder = store.model_dir(workdir, name)
    doc = (store.read_model_meta(folder).extra.get("data_scale")
           if (folder / "model.json").is_file() else None)
    stored = scale_from_doc(doc) if isinstance(doc, dict) else None
    current = (info.features, info.scale) if info.scale is not None else None
    if stored is not None and current is not None and stored != current:
        raise ValueError(f"the training min/max of {info.name!r} differ from those stored "
                         f"with model {name!r}: the data changed since it was trained, so "
                         f"eps would not mean the same; retrain it")
    return stored or current


def _table(rows: list[dict[str, Any]]) -> str:
    def cell(v: Any) -> str:
        return "nan" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)

    cells = [[cell(r[c]) for c in TABLE] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(TABLE)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(TABLE, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    import pandas as pd

    from robustkit.store import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, pd.DataFrame(rows, columns=list(columns)).to_csv(index=False).encode())


def universal_stem(out: str | None, attack: str, model_name: str, eps: float) -> str:
    """The file stem of a universal perturbation's files: a safe store name whatever the
    --out file is called (``my results.csv`` -> ``my_results-uap-...``)."""
    raw = f"{Path(out).stem + '-' if out else ''}{attack}-{model_name}-eps{eps:g}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", raw).lstrip("._-")[:128] or "v"


def _save_universal(v: torch.Tensor, eps: float, attack: str, model_name: str,
                    model: torch.nn.Module, data: Any, out: str | None, workdir: str,
                    params: dict[str, Any]) -> tuple[str, str]:
    """Write v (safetensors + JSON) and a PNG of v and a few perturbed inputs."""
    from robustkit.store import check_name, save_tensors

    folder = Path(out).parent if out else Path(workdir)
    stem = check_name(universal_stem(out, attack, model_name, eps))
    v = v.reshape(data.x.shape[1:])
    meta = {"attack": attack, "model": model_name, "eps": eps, "params": params,
            "dataset": data.info.name, "split": data.info.split}
    json_path = save_tensors(folder, stem, {"v": v}, meta=meta)
    png = folder / f"{stem}.png"
    x = data.x[:N_GALLERY]
    x_adv = (x + v).clamp(0, 1)
    dev = next(iter(model.parameters()), torch.empty(0)).device
    with torch.no_grad():
        clean = model(x.to(dev)).argmax(1).cpu()
        adv = model(x_adv.to(dev)).argmax(1).cpu()
    _plot(png, v, x_adv, clean, adv, data.info.classes, f"{attack}, eps={eps:g}")
    return str(json_path), str(png)


def _plot(path: Path, v: torch.Tensor, x_adv: torch.Tensor, clean: torch.Tensor,
          adv: torch.Tensor, classes: tuple[str, ...], title: str) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from robustkit.store import atomic_write

    image = v.dim() == 3 and v.shape[0] in (1, 3)
    fig, axes = plt.subplots(1, 1 + (len(x_adv) if image else 0),
                             figsize=(1.6 * (1 + len(x_adv)), 2.0), squeeze=False)
    ax = axes[0, 0]
    if image:
        lim = float(v.abs().max()) or 1.0
        ax.imshow(_hwc(v).squeeze(-1) if v.shape[0] == 1 else _hwc(v) / (2 * lim) + 0.5,
                  cmap="RdBu", vmin=-lim, vmax=lim)
        for i, a in enumerate(axes[0, 1:]):
            a.imshow(_hwc(x_adv[i]).squeeze(-1), cmap="gray", vmin=0, vmax=1)
            a.set_title(f"{classes[int(clean[i])]} -> {classes[int(adv[i])]}", fontsize=8,
                        color="red" if clean[i] != adv[i] else "black")
    else:
        ax.bar(range(v.numel()), v.flatten().numpy())
    ax.set_title("v", fontsize=8)
    for a in axes[0]:
        a.set_xticks([])
        a.set_yticks([])
    fig.suptitle(title, fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def _hwc(t: torch.Tensor) -> Any:
    return t.permute(1, 2, 0).numpy()
