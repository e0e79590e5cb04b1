"""alpha-CROWN on the margins: CROWN whose lower ReLU slopes are optimized by gradient
ascent, and the "alpha-crown" method.

Any slope ``a`` in [0, 1] gives a valid line below a ReLU (``relu(z) >= a z`` for every
z), so CROWN's backward pass with any such slopes gives a sound lower bound: the slopes of
the unstable ReLUs become variables, started at CROWN's adaptive choice and moved by Adam
to raise the sum of the margins' bounds (Xu et al. 2021): one per (sample, margin,
neuron) for the margins, and one per (sample, bound side, neuron of layer k, neuron) for
the bounds of each hidden layer k >= 2, recomputed at every step and intersected with
CROWN's (the hidden bounds the margins' relaxation uses are then tighter too). Every
step's bound is sound, so the best of each margin over the steps is kept, and never below
CROWN's (the interval bound through the last layer included). auto_LiRPA's alpha-CROWN
optimizes the same variables: on three digits MLPs at Linf 0.01-0.1 the two end within
0.016 of each other, robustkit's higher on average (benchmarks/certify_reference.py).

Reference: Xu, Zhang, Wang, Wang, Jana, Lin & Hsieh, "Fast and Complete: Enabling
Complete Neural Network Verification with Rapid and Massively Parallel Incomplete
Verifiers", ICLR 2021 (arXiv:2011.13824).
"""
from __future__ import annotations

import functools

import torch
from torch import nn

from robustkit.certify.base import CertifyResult, register
from robustkit.certify.crown import run_margins
from robustkit.certify.crown_bounds import (
    Bounds,
    Layers,
    concretize,
    interval_margins,
    margin_bounds,
    margin_spec,
    preactivation_bounds,
    relaxation,
    unstable_counts,
)
from robustkit.certify.layers import reason

Tensor = torch.Tensor


def _bound(layers: Layers, bounds: Bounds, k: int, slopes: list[Tensor], lam: Tensor,
           c: Tensor, x0: Tensor, eps: float, norm: str) -> Tensor:
    """The lower bound (N, R) of ``lam h_k + c`` (h_k the input of layer k) with the lower
    slopes of the unstable ReLUs of layer i < k taken from slopes[i] (N, R, n_i), which
    must lie in [0, 1] (differentiable; the caller projects them: a clamp here would have
    no gradient at 0 and 1, where CROWN's slopes start)."""
    for i in range(k - 1, -1, -1):
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


def _margins_with(layers: Layers, crown: Bounds, slopes: dict[int, list[Tensor]], spec: Tensor,
                  x0: Tensor, eps: float, norm: str) -> Tensor:
    """The margins' lower bounds (N, K-1) with the slopes of ``slopes[k]`` for the bounds of
    layer k (hidden layers in ``slopes``; the others keep CROWN's bounds, and every
    recomputed bound is intersected with CROWN's) and ``slopes[L-1]`` for the margins."""
    bounds: Bounds = [crown[0]]
    for k in range(1, len(crown)):
        if k not in slopes:
            bounds.append(crown[k])
            continue
        w, b = layers[k]
        n = len(b)
        both = _bound(layers, bounds, k, slopes[k], torch.cat([w, -w]).expand(len(x0), -1, -1),
                      torch.cat([b, -b]).expand(len(x0), -1), x0, eps, norm)
        lo, hi = both[:, :n], -both[:, n:]
        # the tighter of the two in value, gradients through the new bound always (at a
        # tie, or a hair below CROWN's after rounding, a plain max would stop them)
        bounds.append((lo + (torch.maximum(lo, crown[k][0]) - lo).detach(),
                       hi + (torch.minimum(hi, crown[k][1]) - hi).detach()))
    last = len(layers) - 1
    w, b = layers[last]
    return torch.maximum(_bound(layers, bounds, last, slopes[last], spec @ w, spec @ b, x0,
                                eps, norm), interval_margins(spec, w, b, *bounds[-1]))


def alpha_margins(layers: Layers, bounds: Bounds, x0: Tensor, y: Tensor, eps: float,
                  norm: str, *, steps: int = 20, lr: float = 0.5, hidden: bool = True
                  ) -> Tensor:
    """Lower bounds (N, K-1) of ``logit_y - logit_j``: the best over ``steps`` Adam steps
    on the lower slopes, and never below :func:`margin_bounds` (CROWN's). ``hidden``:
    also optimize the slopes behind each hidden layer's bounds (for the same objective,
    the margins), else keep CROWN's hidden bounds."""
    best = margin_bounds(layers, bounds, x0, y, eps, norm)
    if not bounds or steps < 1:
        return best
    k = layers[-1][0].shape[0]
    spec = margin_spec(y, k, x0.dtype)
    start = [relaxation(lo, hi)[0][:, None, :] for lo, hi in bounds]
    rows = {t: 2 * len(layers[t][1]) for t in range(1, len(bounds)) if hidden}
    rows[len(layers) - 1] = k - 1
    slopes = {t: [s.expand(-1, r, -1).clone().requires_grad_() for s in start[:t]]
              for t, r in rows.items()}
    params = [a for t in slopes for a in slopes[t]]
    opt = torch.optim.Adam(params, lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            bound = _margins_with(layers, bounds, slopes, spec, x0, eps, norm)
            best = torch.maximum(best, bound.detach())
            opt.zero_grad()
            (-bound.sum()).backward()
            opt.step()
            with torch.no_grad():  # back into [0, 1], where every slope is sound
                for a in params:
                    a.clamp_(0, 1)
    with torch.no_grad():  # the last step's slopes
        return torch.maximum(best, _margins_with(layers, bounds, slopes, spec, x0, eps, norm))


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
