"""Certified training with interval bound propagation (IBP, Gowal et al. 2018).

The training loss mixes the clean cross-entropy with the cross-entropy of the worst-case
logits IBP bounds over the eps-box: ``kappa * CE(f(x), y) + (1 - kappa) * CE(z_hat, y)``,
``z_hat_j = -(lower bound of logit_y - logit_j)`` for j != y and 0 for y (the margins'
lower bounds of :func:`robustkit.certify.bounds.ibp_margins`). The schedule is the
paper's: clean training first (``warmup``), then eps ramps linearly from 0 to
``train_eps_factor * eps`` and kappa from 1 to ``kappa`` over ``ramp`` (fractions of all
steps), both constant after. Networks trained so have few unstable ReLUs at eps, so
CROWN and MILP (``robustkit.certify``) decide them quickly and certify many inputs.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from robustkit.certify.bounds import ibp_margins, others
from robustkit.certify.layers import ops_of
from robustkit.defenses.base import DefenseContext, DefenseResult, register, with_training
from robustkit.defenses.checkpoint import fingerprint, fit_resumable
from robustkit.params import number

IBP_FAMILIES = ("linear", "mlp", "cnn")


def worst_case_logits(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                      eps: float) -> torch.Tensor:
    """Logits (N, K) whose cross-entropy is the IBP worst case over the Linf eps-box:
    0 for y, minus the margin lower bound for the others (differentiable)."""
    margins = ibp_margins(ops_of(model), x, y, eps)
    z = torch.zeros(len(y), margins.shape[1] + 1, dtype=margins.dtype, device=margins.device)
    return z.scatter(1, others(y, z.shape[1]), -margins)


@register("ibp", families=IBP_FAMILIES, defaults={
    "kappa": 0.5, "warmup": 0.05, "ramp": 0.5, "train_eps_factor": 1.1,
    "epochs": None, "lr": None, "schedule": None, "batch_size": None}, rules={
    "kappa": number(0, 1), "warmup": number(0, 1), "ramp": number(0, 1),
    "train_eps_factor": number(0, open_low=True)})
def ibp(ctx: DefenseContext, x: torch.Tensor, y: torch.Tensor, *, eps: float, kappa: float,
        warmup: float, ramp: float, train_eps_factor: float, **train: Any) -> DefenseResult:
    """Train on IBP's worst-case cross-entropy mixed with the clean one (Gowal et al.).

    Args:
        ctx: model family, seed, device, checkpoint folder (see ``DefenseContext``).
        x: (N, ...) training inputs in [0, 1]; y: (N,) int64 labels.
        eps: Linf budget to certify.
        kappa: final weight of the clean loss (1 - kappa: the IBP loss), in [0, 1].
        warmup: fraction of all steps trained clean (eps 0) first.
        ramp: fraction of all steps over which eps and kappa then ramp linearly.
        train_eps_factor: trains at this multiple of eps (Gowal et al. train MNIST at
            0.4 for 0.3).
        **train: ``epochs``, ``lr``, ``schedule``, ``batch_size`` overrides.

    Returns:
        DefenseResult; ``history`` per epoch (loss is the clean part of the loss).

    Example:
        >>> from robustkit import load_dataset
        >>> from robustkit.defenses import defend
        >>> x, y, _ = load_dataset("digits")
        >>> res = defend("ibp", "mlp", x, y, eps=0.05, model_params={"epochs": 2})
        >>> res.params["kappa"]
        0.5

    Reference: Gowal et al., "On the Effectiveness of Interval Bound Propagation for
    Training Verifiably Robust Models", 2018 (arXiv:1810.12715). It certifies nothing by
    itself: certify the trained model (``robustkit.certify``) for the guarantee, which
    holds for Linf at most the certified eps.
    """
    if warmup + ramp > 1:
        raise ValueError(f"warmup + ramp must be at most 1, got {warmup} + {ramp}")
    ctx = with_training(ctx, train)
    params = {"eps": eps, "kappa": float(kappa), "warmup": float(warmup), "ramp": float(ramp),
              "train_eps_factor": float(train_eps_factor),
              **{k: ctx.spec.params[k] for k in train}}
    total = int(ctx.spec.params["epochs"]) * math.ceil(len(x) / int(
        ctx.spec.params["batch_size"]))

    def schedule(step: int) -> tuple[float, float]:
        t = (step / max(total, 1) - warmup) / max(ramp, 1e-12)
        t = min(max(t, 0.0), 1.0)
        return t * train_eps_factor * eps, 1.0 - t * (1.0 - kappa)

    def penalty(m: torch.nn.Module, xb: torch.Tensor, yb: torch.Tensor, step: int
                ) -> torch.Tensor:
        e, k = schedule(step)
        if e == 0:
            return torch.zeros((), device=xb.device)
        # the loop adds the clean CE once: loss + penalty = k CE_clean + (1 - k) CE_ibp
        clean = F.cross_entropy(m(xb), yb)
        robust = F.cross_entropy(worst_case_logits(m, xb, yb, e), yb)
        return (1 - k) * (robust - clean)

    module, history, _ = fit_resumable(
        ctx, x, y, fingerprint=fingerprint(ctx, "ibp", x, y, params), penalty=penalty,
        desc="ibp")
    return DefenseResult(module, "ibp", params, sum(h["seconds"] for h in history),
                         tuple(history), {"n_fit": len(y)})
