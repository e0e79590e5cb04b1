"""What a worker does: train (or load) one model, evaluate one cell. Runs in any process.

Task functions take picklable arguments, never raise for a failing model or attack (they
return the error instead, so the sweep records it and goes on), and never write
``results.csv``: only the parent appends rows. Trained models go to the store, written to
a temporary folder and renamed into place, so a killed worker leaves no half model.
"""
from __future__ import annotations

import os
import shutil
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustkit.executors import (
    init_worker,  # noqa: F401 - its old home
    prepare_process,
)
from robustkit.sweep.cell_shards import shard_cell_task
from robustkit.sweep.cells import Cell, ModelJob, full_defense_params, full_model_params
from robustkit.sweep.evaluation import evaluate_cell
from robustkit.sweep.jobdata import (
    Context,
    gallery_inputs,
    is_trained,
    job_model,
    load_model,
    model_path,
    stream_data,
    test_data,
    train_data,
)
from robustkit.sweep.spec import NO_DEFENSE

GALLERY = "gallery"


def use_threads(ctx: Context) -> None:
    """Run with ``ctx.threads`` intra-op threads: float reductions (and so the last digits
    of iterative attacks) depend on the thread count, so fixing it makes rows identical
    whatever the executor (and undo a Dask worker's malloc setting: ``prepare_process``)."""
    prepare_process(ctx.threads)


def train_task(job: ModelJob, base_key: str | None, ctx: Context) -> dict[str, Any]:
    """Train ``job``'s model (with its defense) and store it under ``job.key``.

    Returns:
        ``{"key", "status": "ok"|"error", "error", "seconds"}``.
    """
    t0 = time.perf_counter()
    use_threads(ctx)
    try:
        if not is_trained(ctx, job.key):
            _train_and_store(job, base_key, ctx)
        return {"key": job.key, "status": "ok", "error": "",
                "seconds": time.perf_counter() - t0}
    except Exception as exc:  # noqa: BLE001 - recorded as the cells' error, sweep goes on
        return {"key": job.key, "status": "error", "error": describe_error(exc),
                "seconds": time.perf_counter() - t0}


def _train_and_store(job: ModelJob, base_key: str | None, ctx: Context) -> None:
    from robustkit import models, store

    tr = train_data(job, ctx)
    fam, params = job.model.family, full_model_params(job.model)
    t0 = time.perf_counter()
    extras: dict[str, nn.Module] = {}
    info: dict[str, Any] = {}
    if job.defense.defense == NO_DEFENSE:
        module = models.create(fam, **job.model.params).fit(
            tr.x, tr.y, n_classes=tr.info.n_classes, seed=job.seed, device=ctx.device)
    else:
        from robustkit import defenses

        dparams = full_defense_params(job.defense, fam)
        eps = dparams.pop("eps")
        from robustkit.defenses.checkpoint import CheckpointError

        base = load_model(ctx, base_key)[0] if base_key else None
        ckpt = Path(ctx.models_dir) / f".ckpt-{job.key}"

        def defend() -> defenses.DefenseResult:
            return defenses.defend(
                job.defense.defense, fam, tr.x, tr.y, eps=eps,
                model_params=dict(job.model.params), n_classes=tr.info.n_classes,
                seed=job.seed, device=ctx.device, base=base, checkpoint=ckpt, **dparams)

        try:
            res = defend()
        except CheckpointError:
            # A checkpoint this run cannot resume from (an older format, other data, a
            # corrupt file) is only a cache: start over instead of failing every rerun.
            shutil.rmtree(ckpt, ignore_errors=True)
            res = defend()
        module, extras = res.model, dict(res.extras)
        info = {k: v for k, v in res.info.items() if not torch.is_tensor(v)}
    seconds = time.perf_counter() - t0
    metrics = {"test_accuracy": _accuracy(module, job, ctx),
               "train_accuracy": models.accuracy(module, tr.x, tr.y), "seconds": seconds}
    extra = {"model_key": job.key, "model_name": job.model.name,
             "defense": job.defense.defense, "defense_name": job.defense.name,
             "defense_params": full_defense_params(job.defense, fam), "defense_info": info}
    final = model_path(ctx, job.key)
    tmp = final.with_name(f".tmp-{job.key}-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    try:
        store.save(module, tmp, family=fam, params=params, dataset=tr.info, seed=job.seed,
                   metrics=metrics, extra=extra)
        _save_extras(module, extras, tmp)
        try:
            os.rename(tmp, final)  # atomic; fails if another worker stored it first
        except OSError:
            if not is_trained(ctx, job.key):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(Path(ctx.models_dir) / f".ckpt-{job.key}", ignore_errors=True)


def _accuracy(module: nn.Module, job: ModelJob, ctx: Context) -> float:
    """Test accuracy, over the stream for a ``stream = true`` dataset."""
    from robustkit import models

    if not job.dataset.stream:
        te = test_data(job, ctx)
        return models.accuracy(module, te.x, te.y)
    hits = n = 0
    for xb, yb in stream_data(job, ctx, "test"):
        hits += int((models.predict(module, xb) == yb).sum())
        n += len(yb)
    return hits / n if n else float("nan")


def _save_extras(module: nn.Module, extras: dict[str, nn.Module], directory: Path) -> None:
    """Store a defense's extra modules beside the model (detector/rectifier as
    ``robustkit.defenses.system.load_system`` reads them)."""
    from robustkit import store

    if not extras:
        return
    from robustkit.defenses.system import DefendedSystem, save_system

    det, rect = extras.get("detector"), extras.get("rectifier")
    if det is not None or rect is not None:
        save_system(DefendedSystem(module, det, rect), directory)  # type: ignore[arg-type]
    for name, mod in extras.items():
        if name not in ("detector", "rectifier"):
            store.save(mod, directory, family=name, name=name)


def gallery_task(job: ModelJob, ctx: Context) -> dict[str, Any]:
    """DeepFool minimal perturbations of the job's gallery inputs (the same for every model).

    Returns:
        ``{"key", "status", "error", "tensors", "meta"}`` for ``artifacts/deepfool/``.
    """
    use_threads(ctx)
    try:
        from robustkit import attacks

        model, _ = job_model(ctx, job)
        x, y = gallery_inputs(job, ctx)
        res = attacks.get("deepfool").fn(model, x, y)
        with torch.no_grad():
            pred_clean = model(x).argmax(1)
        pred_adv = res.pred if res.pred is not None else model(res.x_adv).argmax(1)
        tensors = {"x": x, "x_adv": res.x_adv, "delta": res.delta, "y": y,
                   "pred_clean": pred_clean, "pred_adv": pred_adv, "l2": res.l2}
        return {"key": job.key, "status": "ok", "error": "", "tensors": tensors,
                "meta": job_meta(job)}
    except Exception as exc:  # noqa: BLE001 - a missing gallery never stops the sweep
        return {"key": job.key, "status": "error", "error": describe_error(exc)}


def job_meta(job: ModelJob) -> dict[str, Any]:
    return {"dataset": job.dataset.name, "model": job.model.name, "family": job.model.family,
            "defense": job.defense.name, "seed": job.seed, "model_key": job.key}


def describe_error(exc: BaseException) -> str:
    """``Type: message`` plus the innermost frame, on one line."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"


def wave_task(cell: Cell, eps: tuple[float, ...], ctx: Context,
              span: tuple[int, int] | None = None) -> dict[str, Any]:
    """A whole cell (:func:`cell_task`), or one shard of a large cell
    (:func:`robustkit.sweep.cell_shards.shard_cell_task`; a failure is returned as
    ``{"error": ...}``, never raised)."""
    if span is None:
        return cell_task(cell, eps, ctx)
    use_threads(ctx)
    try:
        return shard_cell_task(cell, eps, ctx, span)
    except Exception as exc:  # noqa: BLE001 - the cell's rows say why
        return {"cell_id": cell.cell_id, "span": span, "error": describe_error(exc)}


def cell_task(cell: Cell, eps: tuple[float, ...], ctx: Context) -> dict[str, Any]:
    """Evaluate one cell at ``eps`` (its unfinished eps values).

    Returns:
        ``{"cell_id", "rows": [...], "artifacts": [(kind, name, tensors, meta), ...]}``;
        on failure one ``status="error"`` row per eps with the message.
    """
    use_threads(ctx)
    try:
        rows, artifacts = evaluate_cell(cell, eps, ctx)
    except Exception as exc:  # noqa: BLE001 - a failing cell is a row, not a crash
        rows = [{"eps": e, "status": "error", "error": describe_error(exc)} for e in eps]
        artifacts = []
    return {"cell_id": cell.cell_id, "rows": rows, "artifacts": artifacts}
