"""``robustkit attack``: evaluate one attack on one model at one or more eps, print a table.

The model is a stored model (``<workdir>/<NAME>``, see ``robustkit train``) or a family
name, in which case a default model of that family is trained on the fly (not stored).
Universal attacks also write, per eps, ``v`` (safetensors + JSON) and a PNG of v with a
few perturbed test images labelled clean -> adversarial. ``--workers``, ``--dask`` and
``--devices`` split the samples into shards over workers (the same per-sample results as
one process); ``--out-dir`` keeps the per-sample table (``samples.parquet``, written shard
by shard: a rerun resumes), the rows (``rows.csv``) and a RobustBench-style ``card.json``.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import click
import torch

from robustkit.cli.attack_files import (
    N_GALLERY,
    save_universal,
    universal_stem,
    write_csv,
    write_out_dir,
)
from robustkit.cli.model_arg import model_or_default
from robustkit.cli.usage import FiniteFloat, dataset_name, emit_json, parse_params, refuse

TABLE = ("eps", "clean_accuracy", "robust_accuracy", "success_rate", "fooling_rate",
         "l2_median", "linf_median", "seconds")
__all__ = ["attack", "register", "universal_stem", "write_csv"]


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
              dataset_name(c, p, v),
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
                   "bounded by the batch, not the dataset; the same rows. With --workers, "
                   "--dask, --devices or --out-dir, every shard reads its own samples "
                   "anyway.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Write the rows to this CSV file.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Split the samples into shards over N local processes (N > 1).")
@click.option("--dask", "dask_address", default=None, metavar="ADDRESS",
              help="Run the shards on a Dask scheduler, e.g. tcp://127.0.0.1:8786.")
@click.option("--devices", default=None, metavar="DEV,DEV",
              help="One worker process per device, e.g. cuda:0,cuda:1.")
@click.option("--shard-size", type=click.IntRange(min=1), default=None,
              help="Samples per shard (default: about 4 shards per worker; 1,000 with "
                   "--out-dir in one process).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Torch threads per worker (default 1 in worker processes).")
@click.option("--out-dir", type=click.Path(file_okay=False), default=None,
              help="Keep samples.parquet (per sample, written shard by shard: rerunning "
                   "the same command resumes), rows.csv and card.json here.")
@click.option("--save-x-adv", is_flag=True,
              help="With --out-dir: also the adversarial inputs of every eps (x_adv."
                   "safetensors + JSON), as RobustBench asks of an external evaluation.")
def attack(model_name: str, attack_name: str, eps: tuple[float, ...], dataset: str | None,
           split: str, params: tuple[str, ...], device: str, workdir: str,
           data_root: str | None, limit: int | None, batch_size: int, stream: bool, seed: int,
           out: str | None, as_json: bool, workers: int, dask_address: str | None,
           devices: str | None, shard_size: int | None, threads: int | None,
           out_dir: str | None, save_x_adv: bool) -> None:
    """Attack a model at each --eps and report robust accuracy, rates, norms and speed.

    \b
    Example:
        robustkit attack --model mlp --attack fgsm --eps 0.05 --eps 0.1
        robustkit attack --model svm-rbf --attack pgd --eps 0.1 --param steps=20 --json
        robustkit attack --model cnn --attack autoattack --eps 0.3 --workers 2 --out-dir r
    """
    from robustkit import attacks, load_dataset
    from robustkit.data import Dataset, SplitRef, describe_eps, eps_in_units
    from robustkit.data import data_root as data_root_of
    from robustkit.evaluate import COLUMNS, evaluate
    from robustkit.evaluate.samples import kept_samples
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
    model, model_label, model_dataset = model_or_default(model_name, workdir, dataset, data_root, seed,
                                               dev)
    ds_name = dataset or model_dataset or "digits"
    devs = [d.strip() for d in devices.split(",") if d.strip()] if devices else None
    sharded = workers > 1 or dask_address is not None or bool(devs) or out_dir is not None
    if save_x_adv and out_dir is None:
        raise click.UsageError("--save-x-adv needs --out-dir")
    if sum((workers > 1, dask_address is not None, bool(devs))) > 1:
        raise click.UsageError("give one of --workers N (N > 1), --dask or --devices")
    n = None
    if sharded:  # every shard task reads its own samples
        ref = SplitRef(ds_name, split, str(data_root_of(data_root) or "") or None, seed, limit)
        n = len(ref)
    elif not stream:
        data = load_dataset(ds_name, split, root=data_root, seed=seed, limit=limit)
        n = len(data.y)
    vs: dict[float, torch.Tensor] = {}
    total = None if spec.kind == "universal" or n is None else n * (
        1 if spec.kind == "minimal" else len(eps))
    ticker = bar(n if sharded else total, f"attack {spec.name}", "samples")
    kept = kept_samples(out_dir, x_adv=save_x_adv) if sharded else 0
    ticker.update(kept)  # a rerun resumes: its finished shards are not attacked again
    t0 = time.perf_counter()

    def keep_v(e: float | None, res: Any) -> None:
        if e is not None and "v" in res.info:
            vs[e] = torch.as_tensor(res.info["v"]).detach().cpu()
        if spec.kind != "universal" and not sharded:
            ticker.update(len(res.x_adv))
        ticker.set_postfix_str("minimal perturbations" if e is None else f"eps {e:g}")

    def shard_done(res: Any) -> None:
        if not sharded:  # keep_v counted these samples attack call by attack call
            return
        ticker.update(res.stop - res.start)
        rate = (ticker.n - kept) / max(time.perf_counter() - t0, 1e-9)
        ticker.set_postfix_str(f"{rate:.3g} samples/s, last shard {res.start}-{res.stop} on "
                               f"{res.device} at {(res.stop - res.start) / res.seconds:.3g}/s")

    try:
        if stream and not sharded:
            data, rows = _stream_rows(spec, model, ds_name, split, data_root, seed, limit,
                                      batch_size, dev, keep_v, list(eps), kw)
        else:
            fit: dict[str, Any] = {}
            if spec.kind == "universal":
                train = load_dataset(ds_name, "train", root=data_root, seed=seed)
                fit = {"fit_x": train.x, "fit_y": train.y}
            executor = None
            if dask_address is not None:
                from robustkit.executors import DaskExecutor

                executor = DaskExecutor(dask_address)
            try:
                rows = evaluate(model, spec, ref if sharded else data.x,
                                None if sharded else data.y, eps=list(eps),
                                batch_size=batch_size, device=dev, seed=seed,
                                on_result=keep_v, workers=workers, executor=executor,
                                devices=devs, shard_size=shard_size, out=out_dir,
                                threads=threads, on_shard=shard_done,
                                keep_x_adv=save_x_adv, **fit, **kw)
            finally:
                if executor is not None:
                    executor.close()
            if sharded:  # the first inputs, for the PNG of a universal v
                data = Dataset(*ref.read(0, min(N_GALLERY, len(ref))), ref.batches().info)
    finally:
        ticker.close()
    rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in rows]
    units = _units(model_name, workdir, data.info)
    if units is not None:
        rows = [{**r, "eps_original": dict(zip(units[0], eps_in_units(r["eps"], units[1])))}
                for r in rows]
    if out:
        write_csv(Path(out), rows, COLUMNS)
    written = [out] if out else []
    if out_dir is not None:
        written += write_out_dir(Path(out_dir), rows, model, model_name, ds_name, spec, kw,
                                  seed)
        written += [str(Path(out_dir) / "x_adv.safetensors")] if save_x_adv else []
    saved = [save_universal(v, e, spec.name, model_name, model, data, out, workdir, kw)
             for e, v in vs.items()]
    if as_json:
        emit_json(rows)
        return
    click.echo(f"{spec.name} on {model_label}, {ds_name}/{split} ({rows[0]['n']} samples, "
               f"{rows[0]['device']})")
    click.echo(_table(rows))
    if units is not None:
        click.echo("\n".join(describe_eps(list(eps), *units)))
    for path in written + [p for pair in saved for p in pair]:
        click.echo(f"wrote {path}")




def _stream_rows(spec: Any, model: torch.nn.Module, name: str, split: str,
                 root: str | None, seed: int, limit: int | None, batch_size: int,
                 dev: torch.device, on_result: Any, eps: list[float],
                 params: dict[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
    """Rows of ``evaluate_stream`` over lazily read batches (a universal v fitted on the
    streamed train split), and the first few inputs as a Dataset (for the PNG of v)."""
    from robustkit.data import Dataset, iter_batches
    from robustkit.evaluate.stream import evaluate_stream

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
