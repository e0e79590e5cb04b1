"""Evaluate one cell: load its model and data, run ``robustkit.evaluate``, collect artifacts.

Rows get the model's training facts (``train_seconds``, ``test_accuracy``, and for a
defended model ``train_ratio`` against the undefended one when it is in the store).
Universal attacks also return, per eps, their ``v`` and a few perturbed test inputs with
clean and adversarial predictions, for the report's gallery.
"""
from __future__ import annotations

from typing import Any

import torch

from robustkit.sweep.cells import Cell, model_key
from robustkit.sweep.spec import NO_DEFENSE, DefenseEntry
from robustkit.sweep.tasks import (
    Context,
    fit_data,
    gallery_inputs,
    is_trained,
    load_model,
    test_data,
)


def evaluate_cell(cell: Cell, eps: tuple[float, ...], ctx: Context
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows (one per eps) and artifacts of ``cell``; raises on failure (the task records it)."""
    from robustkit import attacks
    from robustkit.evaluate import evaluate

    model, meta = load_model(ctx, cell.job.key)
    te = test_data(cell.job, ctx)
    spec = attacks.get(cell.attack.attack)
    kw: dict[str, Any] = {}
    if spec.kind == "universal":
        fit = fit_data(cell.job, ctx)
        kw = {"fit_x": fit.x, "fit_y": fit.y}
    universal: dict[float, torch.Tensor] = {}

    def keep_v(e: float | None, res: Any) -> None:
        if e is not None and "v" in res.info:
            universal[e] = torch.as_tensor(res.info["v"]).detach().cpu()

    rows = evaluate(model, spec, te.x, te.y, eps=list(eps), device=ctx.device,
                    seed=cell.job.seed, on_result=keep_v if spec.kind == "universal" else None,
                    **kw, **dict(cell.attack.params))
    facts = train_facts(cell, meta, ctx)
    rows = [{**r, **facts, "eps": e} for r, e in zip(rows, eps)]
    arts = [uap_artifact(cell, e, v, model, ctx, meta)
            for e, v in universal.items() if cell.job.gallery > 0]
    return rows, arts


def train_facts(cell: Cell, meta: Any, ctx: Context) -> dict[str, Any]:
    """``train_seconds``, ``test_accuracy`` of the cell's model; ``train_ratio`` vs undefended."""
    seconds = meta.metrics.get("seconds")
    out = {"train_seconds": seconds, "test_accuracy": meta.metrics.get("test_accuracy")}
    if cell.job.defense.defense != NO_DEFENSE and seconds:
        none = DefenseEntry(NO_DEFENSE, NO_DEFENSE)
        base = model_key(cell.job.dataset, cell.job.model, none, cell.job.seed)
        if is_trained(ctx, base):
            base_seconds = load_model(ctx, base)[1].metrics.get("seconds")
            if base_seconds:
                out["train_ratio"] = seconds / base_seconds
    return out


def uap_artifact(cell: Cell, eps: float, v: torch.Tensor, model: torch.nn.Module,
                 ctx: Context, meta: Any) -> dict[str, Any]:
    """``v`` plus the gallery inputs perturbed by it, with clean/adversarial predictions."""
    x, y = gallery_inputs(cell.job, ctx)
    x_adv = (x + v.reshape(x.shape[1:])).clamp(0, 1)
    with torch.no_grad():
        dev = next(iter(model.parameters()), torch.empty(0)).device
        pred_clean = model(x.to(dev)).argmax(1).cpu()
        pred_adv = model(x_adv.to(dev)).argmax(1).cpu()
    fooling = float((pred_clean != pred_adv).float().mean()) if len(x) else float("nan")
    return {"kind": "uap", "eps": eps,
            "tensors": {"v": v.reshape(x.shape[1:]), "x": x, "x_adv": x_adv, "y": y,
                        "pred_clean": pred_clean, "pred_adv": pred_adv},
            "meta": {"classes": list(meta.classes), "gallery_fooling_rate": fooling}}
