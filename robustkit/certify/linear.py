"""Exact certificates of affine models: every sample certified or broken, with the
minimal adversarial distance.

A model whose logits are an affine map ``W x + b`` of the input (the ``linear`` family, a
linear-kernel SVM, linear scikit-learn heads and LDA, ``mlp`` with no hidden layer, any
chain of Linear / Conv2d / pooling / eval BatchNorm layers, behind Standardize, PCA or
Normalized: all folded into one W, b by :mod:`robustkit.certify.layers`) is attacked
successfully at eps exactly when some margin ``(W_y - W_j) x + b_y - b_j`` reaches 0
inside the eps-ball intersected with [0, 1]: the ball in the box is convex, so the
adversarial set is a union of halfspaces and it is enough to minimize each margin, in
closed form (:mod:`robustkit.certify.boxball`). The minimizer of a negative margin is a
witness, checked on the model itself.

Rounding: the margins are computed in float64. A sample is certified only when its worst
margin exceeds ``4 sqrt(D) u (|b_y - b_j| + sum |W_y - W_j|)`` (u: the unit roundoff of the
model's parameters), an allowance for the rounding of the model's own forward pass; a
worst margin inside that allowance whose witness does not flip the model is ``unknown``.
"""
from __future__ import annotations

import math
import time

import torch
from torch import nn

from robustkit.certify.base import CertifyResult, register, verify_witness
from robustkit.certify.boxball import dist_l2, dist_linf, point, worst_l2, worst_linf
from robustkit.certify.dense import network
from robustkit.certify.layers import ops_of, reason


def _applies(model: nn.Module, norm: str) -> str | None:
    return reason(model, affine=True)


def unit_roundoff(model: nn.Module) -> float:
    """Unit roundoff of the model's arithmetic: float64 when all its floating tensors are
    float64, float32's otherwise."""
    dtypes = {t.dtype for t in list(model.parameters()) + list(model.buffers())
              if t.is_floating_point()}
    return torch.finfo(torch.float64 if dtypes == {torch.float64} else torch.float32).eps / 2


def pair_margins(w: torch.Tensor, b: torch.Tensor, y: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A, c, others): ``A[i, j] = w[y_i] - w[others[i, j]]`` (N, K-1, D), c (N, K-1), the
    other classes (N, K-1)."""
    k = w.shape[0]
    idx = torch.arange(k, device=y.device).expand(len(y), k)
    others = idx[idx != y[:, None]].reshape(len(y), k - 1)
    return w[y][:, None, :] - w[others], b[y][:, None] - b[others], others


@register("linear", applies=_applies, priority=10, exact=True)
def linear(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: tuple[float, ...],
           norm: str, time_limit: float, chunk: int = 512) -> list[CertifyResult]:
    """Exact certificate of an affine model: worst-case margins and minimal distances in
    closed form (Linf and L2, inside the [0, 1] box).

    Args:
        model: a model whose logits are affine in x (see the module doc).
        x: (N, ...) inputs in [0, 1]; y: int64 (N,) labels.
        eps: radii, one result each.
        norm: ``"linf"`` or ``"l2"``.
        time_limit: unused (the certificate is closed form).
        chunk: samples per batch (memory is chunk * K * D float64 numbers).

    Returns:
        One ``CertifyResult`` per eps; ``radius`` is the minimal adversarial distance
        (exact up to the rounding allowance; inf where no point of the box is adversarial), ``info["margin"]`` the
        worst-case margin logit_y - max_j logit_j over the ball (float64, N).

    Example:
        >>> from robustkit import load_dataset, models
        >>> from robustkit.certify import certify
        >>> model, _ = models.train("linear", "digits", device="cpu")
        >>> x, y, _ = load_dataset("digits", "test")
        >>> certify(model, x, y, eps=0.05, method="linear").decided_share
        1.0
    """
    start = time.perf_counter()
    (w, b), = network(ops_of(model), tuple(x.shape[1:]))
    tol_scale = 4 * math.sqrt(w.shape[1]) * unit_roundoff(model)
    flat = x.detach().flatten(1).double().cpu()
    yc = y.detach().cpu()
    with torch.no_grad():
        correct = model(x).argmax(1).cpu() == yc
    parts = [_chunk(w, b, flat[i:i + chunk], yc[i:i + chunk], eps, norm, tol_scale)
             for i in range(0, len(flat), chunk)]
    seconds = (time.perf_counter() - start) / max(len(x), 1)
    out = []
    for e_idx, e in enumerate(eps):
        worst = torch.cat([p[1][e_idx] for p in parts])
        adv = torch.cat([p[2][e_idx] for p in parts])
        safe = torch.cat([p[3][e_idx] for p in parts])
        radius = torch.cat([p[0] for p in parts])
        x_adv = torch.where(correct.reshape(-1, *[1] * (x.dim() - 1)).to(x.device),
                            adv.reshape(x.shape).to(x.device, x.dtype), x)
        broken = verify_witness(model, x, y, x_adv, e, norm).cpu()
        certified = correct & safe & ~broken
        x_adv = torch.where(broken.reshape(-1, *[1] * (x.dim() - 1)).to(x.device), x_adv, x)
        radius = torch.where(correct, radius, torch.zeros_like(radius))
        reasons = tuple("" if c or b_ else "worst-case margin within the rounding allowance"
                        for c, b_ in zip(certified.tolist(), broken.tolist()))
        out.append(CertifyResult(
            eps=e, norm=norm, certified=certified.to(x.device), broken=broken.to(x.device),
            x_adv=x_adv, radius=radius, seconds=torch.full((len(x),), seconds / len(eps),
                                                            dtype=torch.float64),
            method="linear", reasons=reasons,
            info={"margin": torch.where(correct, worst, torch.full_like(worst, math.nan))}))
    return out


def _chunk(w: torch.Tensor, b: torch.Tensor, flat: torch.Tensor, y: torch.Tensor,
           eps: tuple[float, ...], norm: str, tol_scale: float):
    """(radius, [worst margin], [witness], [margin above the rounding allowance]) per eps."""
    a, c, _ = pair_margins(w, b, y)
    x0 = flat[:, None, :]
    tol = tol_scale * (c.abs() + a.abs().sum(-1))
    m0 = (a * x0).sum(-1) + c
    dist_fn = dist_linf if norm == "linf" else dist_l2
    # the distance at which the margin falls to the rounding allowance (where the model's
    # own forward pass may flip), shrunk by a relative 1e-9: a lower bound of the minimal
    # distance for the model as it computes, not only in exact arithmetic
    dist, _ = dist_fn(a, (m0 - tol).clamp_min(0), x0)
    radius = (dist.amin(-1) * (1 - 1e-9)).clamp_min(0)
    worsts, advs, safes = [], [], []
    for e in eps:
        worst_fn = worst_linf if norm == "linf" else worst_l2
        value, amount = worst_fn(a, c, x0, e)
        j = value.argmin(-1)
        pick = j[:, None, None].expand(-1, 1, a.shape[-1])
        adv = point(a.gather(1, pick)[:, 0], flat, amount.gather(1, pick)[:, 0])
        worsts.append(value.amin(-1))
        advs.append(adv)
        safes.append((value > tol).all(-1))
    return radius, worsts, advs, safes
