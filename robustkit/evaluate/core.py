"""Attack x model -> rows: robust accuracy, success/fooling/misclassification rates, norms and
speed per eps, for every kind of attack (fixed budget, minimal perturbation, universal),
in this process or split into shards over workers (:mod:`robustkit.evaluate.shards`).

Definitions (per row, over the n evaluated samples):
    clean_accuracy          pred(x) == y
    robust_accuracy         pred(x_adv) == y
    success_rate            pred(x_adv) != y, among the clean-correct samples (NaN if none)
    fooling_rate            pred(x_adv) != pred(x)  (the UAP paper's definition)
    misclassification_rate  pred(x_adv) != y
    l2_*, linf_*            norms of the delta actually applied, x_adv - x
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from robustkit.attacks import AttackSpec, get
from robustkit.attacks.base import eval_mode
from robustkit.attacks.checks import check_not_meta
from robustkit.certify.columns import certify_options, with_certificates
from robustkit.data.stream import SplitRef
from robustkit.evaluate.checks import (
    canonical,
    check_batch_size,
    check_data,
    check_eps,
    check_labels,
    resolve_attack,
    with_version,
)
from robustkit.evaluate.runs import OnResult, fit_universal
from robustkit.evaluate.samples import (
    COLUMNS,
    gather_x_adv,
    read_parts,
    rows_from,
    shard_frame,
    write_part,
    write_table,
    write_x_adv,
)
from robustkit.evaluate.shards import (
    Data,
    ShardJob,
    ShardResult,
    check_folder,
    default_shard_size,
    fingerprint,
    plan,
    run_shards,
    shard_data,
    whole,
)
from robustkit.executors import make_executor
from robustkit.models.registry import model_device, resolve_device

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["COLUMNS", "OnResult", "evaluate", "evaluate_frame", "evaluate_samples"]

OnShard = Callable[[ShardResult], None]


def evaluate(model: nn.Module, attack: str | AttackSpec, x: torch.Tensor | SplitRef,
             y: torch.Tensor | None = None, *,
             eps: float | Sequence[float], batch_size: int = 1024,
             device: str | torch.device | None = None, fit_x: torch.Tensor | None = None,
             fit_y: torch.Tensor | None = None, seed: int = 0,
             on_result: OnResult | None = None, workers: int = 0, executor: Any = None,
             devices: Sequence[str] | None = None, shard_size: int | None = None,
             out: str | Path | None = None, threads: int | None = None,
             on_shard: OnShard | None = None,
             certify: bool | Mapping[str, Any] | None = None, keep_x_adv: bool = False,
             **params: Any) -> list[dict[str, Any]]:
    """Attack ``model`` on (x, y) at every eps and measure the outcome, one row per eps.

    Fixed-budget attacks run once per eps, except those with a grid path (``autoattack``:
    ``AttackSpec.curve``), which run once over the eps list, each larger eps attacking
    only the samples that survived the smaller ones (``seconds`` is then the time of the
    whole grid, repeated on every row). Minimal attacks (DeepFool) run once; for each
    eps a sample keeps its x_adv only if its delta (in the attack's norm) is <= eps, else x.
    Universal attacks fit one v per eps (radius xi = eps) on ``fit_x``/``fit_y`` (default:
    x, y themselves), once, and apply x_adv = clamp(x + v, 0, 1). Inputs go through the
    model in batches of ``batch_size``; on CUDA out-of-memory the batch halves and retries.

    With ``workers`` > 1, ``devices`` or an ``executor``, the samples split into shards of
    whole batches, one task each. Every attack draws its randomness per sample (seed,
    sample index), so each sample's outcome is the one a single process gives; with the
    same ``shard_size`` the batches are the same too, and the rows equal bit for bit.
    With ``out``, each finished shard is written to ``<out>/samples.parts/`` at once and
    the whole per-sample table to ``<out>/samples.parquet`` (:mod:`robustkit.evaluate.samples`);
    a rerun with the same model, data and settings runs only the shards not there.

    Args:
        model: classifier returning logits (N, K); left unchanged (a copy is moved when
            ``device`` differs from the model's).
        attack: a registry name (``"fgsm"``, ``"foolbox:LinfPGD"``...) or an AttackSpec.
        x: inputs (N, ...) in [0, 1], on any device; or a dataset split by name
            (:class:`robustkit.data.SplitRef`), of which every shard task reads only its
            own samples (the driver never holds the inputs; a universal fit without
            ``fit_x`` and ``certify`` read them all).
        y: int64 (N,) labels in [0, K) (None with a SplitRef).
        eps: one budget or a list (each >= 0).
        batch_size: samples per attack call (>= 1).
        device: where to compute: None (the model's device), ``"auto"``, ``"cpu"``, ...
        fit_x, fit_y: data a universal perturbation is fitted on (held out from x).
        seed: base seed; sample i draws its randomness from (seed, i) in every attack.
        on_result: called with (eps, AttackResult) for every attack call (eps None for the
            single run of a minimal attack), where the shards run in this process, and for
            every universal fit; e.g. to keep a UAP's ``info["v"]``.
        workers: N > 1 runs shards in N local processes (``threads`` torch threads each,
            default 1).
        executor: a :mod:`robustkit.executors` executor to run shards on (a Dask cluster:
            ``DaskExecutor(address)``); left open.
        devices: one worker process per device, e.g. ``["cuda:0", "cuda:1"]``.
        shard_size: samples per shard (rounded up to whole batches); default about four
            shards per worker, all of x in one process without ``out``, else (and for a
            SplitRef) 1,000.
        out: folder for the per-sample table and the finished shards (resume).
        threads: torch intra-op threads per worker (None: 1 in worker processes).
        on_shard: called in this process with every finished ShardResult (progress).
        certify: also certify (x, y) at every eps (``True``, or ``{"method": ...,
            "time_limit": ..., "params": {...}}``; default: no): rows gain
            ``robustkit.certify.columns.COLUMNS``, and a certified sample the attack broke
            raises ``CertificateContradiction``.
        keep_x_adv: also write every eps's adversarial inputs, per shard and then as one
            safetensors group ``<out>/x_adv`` (needs ``out``; the whole set in memory).
        **params: attack hyperparameters.

    Returns:
        One dict per eps with the keys of ``COLUMNS``, in that order. ``seconds`` is the
        attack time summed over shards (for minimal attacks the one run's, on every row).

    Example:
        >>> from robustkit import load_dataset, models
        >>> model, _ = models.train("linear", "digits", epochs=5)
        >>> x, y, _ = load_dataset("digits", "test", limit=100)
        >>> rows = evaluate(model, "fgsm", x, y, eps=[0.0, 0.1])
        >>> rows[0]["robust_accuracy"] == rows[0]["clean_accuracy"]
        True
    """
    return evaluate_samples(model, attack, x, y, eps=eps, batch_size=batch_size, device=device,
                            fit_x=fit_x, fit_y=fit_y, seed=seed, on_result=on_result,
                            workers=workers, executor=executor, devices=devices,
                            shard_size=shard_size, out=out, threads=threads,
                            on_shard=on_shard, certify=certify, keep_x_adv=keep_x_adv,
                            **params)[0]


def evaluate_samples(model: nn.Module, attack: str | AttackSpec, x: torch.Tensor | SplitRef,
                     y: torch.Tensor | None = None, *, eps: float | Sequence[float], batch_size: int = 1024,
                     device: str | torch.device | None = None,
                     fit_x: torch.Tensor | None = None, fit_y: torch.Tensor | None = None,
                     seed: int = 0, on_result: OnResult | None = None, workers: int = 0,
                     executor: Any = None, devices: Sequence[str] | None = None,
                     shard_size: int | None = None, out: str | Path | None = None,
                     threads: int | None = None, on_shard: OnShard | None = None,
                     certify: bool | Mapping[str, Any] | None = None,
                     keep_x_adv: bool = False,
                     **params: Any) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """:func:`evaluate`'s rows and its per-sample table (``robustkit.evaluate.samples``' columns).

    Example:
        >>> from robustkit import load_dataset, models
        >>> model, _ = models.train("linear", "digits", epochs=5)
        >>> x, y, _ = load_dataset("digits", "test", limit=20)
        >>> rows, samples = evaluate_samples(model, "noise", x, y, eps=[0.1, 0.2])
        >>> len(samples), bool((samples["robust"] == (samples["adv_pred"] == samples["y"])).all())
        (40, True)
    """
    import pandas as pd

    spec = resolve_attack(attack)
    eps_list = check_eps(eps)
    found = spec.check(params)  # every bad name or value before any work
    if found:
        raise ValueError("; ".join(found))
    check_batch_size(batch_size)
    data, first = shard_data(x, y, batch_size)
    if torch.is_tensor(first[0]):
        check_not_meta(model, first[0])
    cert = certify_options(certify)
    if keep_x_adv and out is None:
        raise ValueError("keep_x_adv=True needs out= (the folder the inputs are written to)")
    if shard_size is not None:
        check_batch_size(shard_size, "shard_size")
    dev = canonical(resolve_device(device) if device is not None else model_device(model))
    if canonical(model_device(model)) != dev:
        model = copy.deepcopy(model).to(dev)
    with eval_mode(model):
        k = check_data(model, *first, "x", "y", dev)
        if isinstance(data, SplitRef):
            check_labels(data.batches().labels(), k)
        if fit_x is not None or fit_y is not None:
            if fit_x is None or fit_y is None:
                raise ValueError("fit_x and fit_y must be given together")
            check_data(model, fit_x, fit_y, "fit_x", "fit_y", dev, k)
        fits = fit_universal(spec, model, *((fit_x, fit_y) if fit_x is not None and
                                            fit_y is not None else whole(data)),
                             eps_list, dev, seed, on_result, params) \
            if spec.kind == "universal" else []
    ex = executor if executor is not None else make_executor(
        workers=workers, devices=devices, threads=threads or (1 if workers > 1 or devices
                                                              else None))
    try:
        n, pooled = len(data[1]) if isinstance(data, tuple) else len(data), ex.name != "serial"
        size = shard_size or (default_shard_size(n, ex.workers, batch_size) if pooled
                              else n if out is None and isinstance(data, tuple)
                              else min(n, max(batch_size, 1000)))
        bs = min(batch_size, size)
        shards = plan(n, size, bs)
        name = spec.name if _registered(spec) else spec
        job = ShardJob(model, name, tuple(eps_list), dict(params), seed, bs, str(dev),
                       threads if threads else (1 if pooled else None),
                       tuple(v for v, _ in fits), None if pooled else on_result,
                       keep_x_adv)
        parts = _run(ex, job, data, shards, spec.name, eps_list, params, out, on_shard)
    finally:
        if executor is None:
            ex.close()
    frame = pd.concat([f for f, _ in parts.values()], ignore_index=True)
    frame = frame.sort_values(["eps", "sample"], kind="stable", ignore_index=True)
    seconds = [sum(sec[i] for _, sec in parts.values()) + (fits[i][1] if fits else 0.0)
               for i in range(len(eps_list))]
    if out is not None:
        write_table(Path(out) / "samples.parquet", frame)
        if keep_x_adv:
            gather_x_adv(Path(out) / "samples.parts", list(parts), Path(out))
    rows = with_version(rows_from(frame, spec.name, eps_list, seconds, str(dev)), spec, params)
    if cert is not None:
        norm = str(params.get("norm", spec.norm))
        per_eps = [frame[frame["eps"] == e] for e in eps_list]  # sorted by sample
        with eval_mode(model):
            cx, cy = whole(data)
            rows = with_certificates(
                rows, model, cx.to(dev), cy.to(dev), norm=norm, options=cert, attack=spec.name,
                preds=[torch.from_numpy(f["adv_pred"].to_numpy().copy()) for f in per_eps],
                dists=[torch.from_numpy(f["l2" if norm == "l2" else "linf"].to_numpy().copy())
                       for f in per_eps])
    return rows, frame


def _run(ex: Any, job: ShardJob, data: Data, shards: list[tuple[int, int]], name: str, eps_list: list[float],
         params: dict[str, Any], out: str | Path | None, on_shard: OnShard | None
         ) -> dict[tuple[int, int], tuple[pd.DataFrame, list[float]]]:
    """Every shard's (records, per-eps seconds): read from ``out`` where finished there,
    else run (and written there as each finishes)."""
    parts: dict[tuple[int, int], tuple[pd.DataFrame, list[float]]] = {}
    folder = Path(out) / "samples.parts" if out is not None else None
    if folder is not None:
        check_folder(folder, {**fingerprint(job.model, name, data, eps_list, params,
                                            job.seed, job.batch_size, shards),
                              "keep_x_adv": job.keep_x_adv})
        parts = {k: v for k, v in read_parts(folder, x_adv=job.keep_x_adv).items()
                 if k in set(shards)}
    for res in run_shards(ex, job, data, shards, skip=set(parts)):
        frame = shard_frame(name, res.start, res.y, res.clean, eps_list, res.outcomes)
        seconds = [o.seconds for o in res.outcomes]
        if folder is not None:
            if res.x_adv is not None:
                write_x_adv(folder, res.start, res.stop, res.x_adv)
            write_part(folder, res.start, res.stop, frame, seconds)
        parts[(res.start, res.stop)] = (frame, seconds)
        if on_shard is not None:
            on_shard(res)
    return parts


def _registered(spec: AttackSpec) -> bool:
    try:
        return get(spec.name) is spec or spec.name.startswith("foolbox:")
    except (KeyError, ValueError):
        return False


def evaluate_frame(*args: Any, **kwargs: Any) -> pd.DataFrame:
    """:func:`evaluate` as a pandas DataFrame with the columns of ``COLUMNS``.

    Example:
        >>> from robustkit import load_dataset, models
        >>> model, _ = models.train("linear", "digits", epochs=5)
        >>> x, y, _ = load_dataset("digits", "test", limit=50)
        >>> list(evaluate_frame(model, "noise", x, y, eps=[0.1]).columns) == list(COLUMNS)
        True
    """
    import pandas as pd

    return pd.DataFrame(evaluate(*args, **kwargs), columns=list(COLUMNS))
