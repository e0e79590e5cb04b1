"""Evaluate one cell: load its model and data, run ``robustkit.evaluate``, collect artifacts.

Rows get the model's training facts (``train_seconds``, ``test_accuracy``, and for a
defended model ``train_ratio`` against the undefended one when it is in the store).
Universal attacks also return, per eps, their ``v`` and a few perturbed test inputs with
clean and adversarial predictions, for the report's gallery.
"""
from __future__ import annotations

from typing import Any

import torch

from robustkit.sweep.cells import SYSTEM_ATTACKS, Cell, is_wrapper, model_key
from robustkit.sweep.jobdata import (
    Context,
    fit_data,
    gallery_inputs,
    is_trained,
    job_model,
    load_model,
    model_path,
    stream_data,
    test_data,
)
from robustkit.sweep.spec import NO_DEFENSE, DefenseEntry


def evaluate_cell(cell: Cell, eps: tuple[float, ...], ctx: Context
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows (one per eps) and artifacts of ``cell``; raises on failure (the task records it)."""
    from robustkit import attacks
    from robustkit.evaluate import evaluate

    model, meta = job_model(ctx, cell.job)
    if is_wrapper(cell.job.defense):
        rows, arts = evaluate_system(cell, eps, ctx, model)
        facts = train_facts(cell, meta, ctx)
        return [{**r, **facts} for r in rows], arts
    spec = attacks.get(cell.attack.attack)
    universal: dict[float, torch.Tensor] = {}

    def keep_v(e: float | None, res: Any) -> None:
        if e is not None and "v" in res.info:
            universal[e] = torch.as_tensor(res.info["v"]).detach().cpu()

    common = {"eps": list(eps), "device": ctx.device, "seed": cell.job.seed,
              "on_result": keep_v if spec.kind == "universal" else None,
              **dict(cell.attack.params)}
    if cell.job.dataset.stream:
        from robustkit.evaluate.stream import evaluate_stream

        fit = stream_data(cell.job, ctx, "train") if spec.kind == "universal" else None
        rows = evaluate_stream(model, spec, stream_data(cell.job, ctx, "test"), fit=fit,
                               **common)
    else:
        te = test_data(cell.job, ctx)
        kw: dict[str, Any] = {}
        if spec.kind == "universal":
            fd = fit_data(cell.job, ctx)
            kw = {"fit_x": fd.x, "fit_y": fd.y}
        rows = evaluate(model, spec, te.x, te.y, **kw, **common, certify=cell.certify)
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


def evaluate_system(cell: Cell, eps: tuple[float, ...], ctx: Context, model: torch.nn.Module
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Score classifier + detector/rectifier with ``detection_scores``: one row per eps
    (adaptive or not, as the cell says) and one ROC artifact per eps."""
    import copy

    from robustkit.defenses.detection import detection_scores
    from robustkit.defenses.system import load_system

    dev = torch.device(ctx.device)
    model = copy.deepcopy(model).to(dev)  # the cached model stays where it is
    system = load_system(model_path(ctx, cell.job.key), model, device=dev)
    te, fit = test_data(cell.job, ctx), fit_data(cell.job, ctx)
    name = SYSTEM_ATTACKS[cell.attack.attack]
    params = dict(cell.attack.params)
    kw: dict[str, Any] = {"norm": params.pop("norm", "linf")}
    if name == "pgd" and "steps" in params:
        kw["steps"] = params.pop("steps")
    if name == "uap":
        kw["uap_params"], params = params, {}
    if name == "autoattack":
        kw["autoattack_params"], params = params, {}
    if params:
        raise ValueError(f"parameters {sorted(params)} of {cell.attack.attack!r} are not "
                         f"supported when scoring a defended system (detection_scores takes "
                         f"norm, steps for pgd, any uap_sgd or autoattack parameter)")
    found = detection_scores(model, system, te.x.to(dev), te.y.to(dev), attacks=(name,),
                             eps=tuple(eps), adaptive=cell.attack.adaptive,
                             fit_x=fit.x.to(dev), fit_y=fit.y.to(dev), seed=cell.job.seed,
                             **kw)
    rows, arts = [], []
    for r in (r for r in found if bool(r["adaptive"]) == cell.attack.adaptive):
        seconds = float(r["seconds"])
        rows.append({
            "eps": float(r["eps"]), "n": r["n"], "adaptive": cell.attack.adaptive,
            "clean_accuracy": r["classifier_clean_accuracy"],
            "robust_accuracy": r["classifier_robust_accuracy"],
            "system_accuracy": r["system_accuracy"],
            "clean_system_accuracy": r["clean_system_accuracy"],
            "detection_auc": r["auc"], "tpr_at_5fpr": r["tpr_at_5fpr"],
            # What the system does, not what the detector flags: a prn rectifies and
            # classifies its flagged inputs, so it rejects none of them.
            "rejection_rate": r["rejection_rate"], "seconds": seconds,
            "samples_per_second": r["n"] / seconds if seconds > 0 else None,
            "device": str(dev), "method": r["method"],
            "flagged_rate": r["tpr_at_threshold"],
            "fpr_at_threshold": r["fpr_at_threshold"]})
        if r.get("fpr"):
            arts.append({"kind": "roc", "eps": float(r["eps"]), "data": {
                "adaptive": cell.attack.adaptive, "auc": r["auc"], "method": r["method"],
                "tpr_at_5fpr": r["tpr_at_5fpr"], "fpr": list(r["fpr"]), "tpr": list(r["tpr"])}})
    return rows, arts
