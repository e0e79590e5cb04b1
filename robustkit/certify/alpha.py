"""alpha-CROWN on the margins: CROWN whose lower ReLU slopes are optimized by gradient
ascent, and the "alpha-crown" method.

Any slope ``a`` in [0, 1] gives a valid line below a ReLU (``relu(z) >= a z`` for every
z), so CROWN's backward pass with any such slopes gives a sound lower bound: the slopes of
the unstable ReLUs become variables, one per (sample, margin, neuron), started at CROWN's
adaptive choice and moved by Adam to raise each margin's bound (Xu et al. 2021). Every
step's bound is sound, so the best of each margin over the steps is kept, and never below
CROWN's (the interval bound through the last layer included). The hidden layers' bounds
are CROWN's and are not optimized (full alpha-CROWN optimizes their slopes too: tighter
on deep nets, a separate problem per layer); on a net with one hidden layer they are exact.

Reference: Xu, Zhang, Wang, Wang, Jana, Lin & Hsieh, "Fast and Complete: Enabling
Complete Neural Network Verification with Rapid and Massively Parallel Incomplete
Verifiers", ICLR 2021 (arXiv:2011.13824).
"""
from __future__ import annotations

import functools

import torch
from torch import nn

from robustkit.certify.base import CertifyResult, register
from robustkit.certify.bounds import others
from robustkit.certify.crown import run_margins
from robustkit.certify.crown_bounds import (
    Bounds,
    Layers,
    concretize,
    margin_bounds,
    preactivation_bounds,
    relaxation,
    unstable_counts,
)
from robustkit.certify.layers import reason

Tensor = torch.Tensor


def _bound(layers: Layers, bounds: Bounds, slopes: list[Tensor], lam: Tensor, c: Tensor,
           x0: Tensor, eps: float, norm: str) -> Tensor:
    """The lower bound (N, R) of ``lam z_L + c`` with the lower slopes of the unstable ReLUs
    of layer i taken from slopes[i] (N, R, n_i), which must lie in [0, 1] (differentiable;
    the caller projects them: a clamp here would have no gradient at 0 and 1, where CROWN's
    slopes start)."""
    for i in range(len(bounds) - 1, -1, -1):
        lo, hi = bounds[i]
        lower, upper, shift = relaxation(lo, hi)
        unstable = ((lo < 0) & (hi > 0))[:, None, :]
        slope = torch.where(unstable, slopes[i], lower[:, None, :])
        pos, neg = lam.clamp_min(0), lam.clamp_max(0)
        c = c + (neg * shift[:, None, :]).sum(-1)
        lam = pos * slope + neg * upper[:, None, :]
        w, b = layers[i]
        c, lam = c + lam @ b, lam @ w
    return concretize(lam, c, x0, eps, norm)


def alpha_margins(layers: Layers, bounds: Bounds, x0: Tensor, y: Tensor, eps: float,
                  norm: str, *, steps: int = 20, lr: float = 0.5) -> Tensor:
    """Lower bounds (N, K-1) of ``logit_y - logit_j``: the best over ``steps`` Adam steps
    on the lower slopes, and never below :func:`margin_bounds` (CROWN's)."""
    best = margin_bounds(layers, bounds, x0, y, eps, norm)
    if not bounds or steps < 1:
        return best
    k = layers[-1][0].shape[0]
    eye = torch.eye(k, dtype=x0.dtype)
    spec = eye[y][:, None, :] - eye[others(y, k)]
    lam, c = spec @ layers[-1][0], spec @ layers[-1][1]
    slopes = [relaxation(lo, hi)[0][:, None, :].expand(-1, k - 1, -1).clone().requires_grad_()
              for lo, hi in bounds]
    opt = torch.optim.Adam(slopes, lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            bound = _bound(layers, bounds, slopes, lam, c, x0, eps, norm)
            best = torch.maximum(best, bound.detach())
            opt.zero_grad()
            (-bound.sum()).backward()
            opt.step()
            with torch.no_grad():  # back into [0, 1], where every slope is sound
                for a in slopes:
                    a.clamp_(0, 1)
    with torch.no_grad():  # the last step's slopes
        return torch.maximum(best, _bound(layers, bounds, slopes, lam, c, x0, eps, norm))


def _margins(layers: Layers, x0: Tensor, y: Tensor, eps: float, norm: str, *, steps: int,
             lr: float) -> tuple[Tensor, Tensor]:
    bounds = preactivation_bounds(layers, x0, eps, norm)
    return (alpha_margins(layers, bounds, x0, y, eps, norm, steps=steps, lr=lr),
            unstable_counts(bounds))


def _applies(model: nn.Module, norm: str) -> str | None:
    return reason(model)


@register("alpha-crown", applies=_applies, priority=45)
def alpha_crown(model: nn.Module, x: Tensor, y: Tensor, *, eps: tuple[float, ...], norm: str,
                time_limit: float, steps: int = 20, lr: float = 0.5, attack_steps: int = 20,
                chunk: int = 64) -> list[CertifyResult]:
    """alpha-CROWN bounds of the margins of a ReLU network (sound, not complete; at least
    as tight as ``crown``, about ``steps`` times its cost on the margins).

    Args:
        model: a model :mod:`robustkit.certify.layers` reads (Linear, Conv2d, ReLU, ...).
        x: (N, ...) inputs in [0, 1]; y: int64 (N,) labels.
        eps: radii, one result each. norm: ``"linf"`` or ``"l2"``.
        time_limit: unused (a fixed number of steps).
        steps: Adam steps on the slopes (0: CROWN's bounds). lr: their step size
            (auto_LiRPA's default).
        attack_steps: PGD steps on the samples not certified (as for ``crown``).
        chunk: samples per batch.

    Returns:
        One ``CertifyResult`` per eps; ``info`` as for ``crown``.

    Example:
        >>> from robustkit import load_dataset, models
        >>> tr = load_dataset("blobs", "train", seed=0)
        >>> net = models.create("mlp", hidden=[8], epochs=5).fit(tr.x, tr.y, n_classes=3)
        >>> r = alpha_crown(net, tr.x[:5], tr.y[:5], eps=(0.01,), norm="linf", time_limit=1)
        >>> len(r[0].status)
        5
    """
    if steps < 0 or lr <= 0:
        raise ValueError(f"steps={steps!r}, lr={lr!r}: expected steps >= 0 and lr > 0")
    margins_of = functools.partial(_margins, steps=steps, lr=lr)
    return run_margins(model, x, y, eps, norm, "alpha-crown", attack_steps, chunk, margins_of)
