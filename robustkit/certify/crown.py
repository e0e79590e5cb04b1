"""CROWN: backward linear relaxation of a ReLU network, and the "ibp" and "crown" methods.

On the dense layers of :func:`robustkit.certify.layers.network`
(``z_1 = W_1 x + b_1``, ``z_k = W_k relu(z_{k-1}) + b_k``), a lower bound of ``L z_k + c``
over the input set is found by walking back to the input: each ReLU with pre-activation
bounds ``l < 0 < u`` is replaced by a line below it (slope 1 when ``u > -l``, else 0: the
adaptive choice of Zhang et al. 2018) where the coefficient is positive, and by the chord
``u (z - l) / (u - l)`` above it where it is negative; stable ReLUs are exact. What is
left is linear in x and minimized exactly over the ball intersected with [0, 1]
(Linf: the box; L2: :func:`robustkit.certify.boxball.worst_l2`). Pre-activation bounds
are computed layer by layer the same way and intersected with IBP's. All in float64.

Reference: Zhang, Weng, Chen, Hsieh & Daniel, "Efficient Neural Network Robustness
Certification with General Activation Functions", NeurIPS 2018 (arXiv:1811.00866);
Gowal et al., "On the Effectiveness of Interval Bound Propagation for Training Verifiably
Robust Models", 2018 (arXiv:1810.12715).
"""
from __future__ import annotations

import time

import torch
from torch import nn

from robustkit.certify.base import CertifyResult, register, undecided
from robustkit.certify.bounds import (
    allowance,
    attack_witness,
    ibp_margins,
    input_box,
    others,
    result,
)
from robustkit.certify.boxball import worst_l2
from robustkit.certify.dense import network
from robustkit.certify.layers import Unsupported, ops_of, reason

Tensor = torch.Tensor
Layers = list[tuple[Tensor, Tensor]]
Bounds = list[tuple[Tensor, Tensor]]


def concretize(a: Tensor, c: Tensor, x0: Tensor, eps: float, norm: str) -> Tensor:
    """min of ``a x + c`` (a (N, R, D), c (N, R)) over the eps-ball of x0 (N, D) in [0, 1]."""
    if norm == "l2":
        return worst_l2(a, c, x0[:, None, :], eps)[0]
    lo, hi = input_box(x0, eps)
    return (a.clamp_min(0) @ lo[:, :, None] + a.clamp_max(0) @ hi[:, :, None])[..., 0] + c


def relaxation(lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(lower slope, upper slope, upper intercept) of ReLU over [lo, hi]."""
    active, dead = lo >= 0, hi <= 0
    unstable = ~(active | dead)
    chord = hi / (hi - lo).clamp_min(1e-300)
    upper = torch.where(active, 1.0, torch.where(unstable, chord, 0.0)).to(lo.dtype)
    lower = torch.where(active | (unstable & (hi > -lo)), 1.0, 0.0).to(lo.dtype)
    return lower, upper, torch.where(unstable, -lo * chord, torch.zeros_like(lo))


def backward(layers: Layers, bounds: Bounds, k: int, lam: Tensor, c: Tensor, x0: Tensor,
             eps: float, norm: str) -> Tensor:
    """Lower bound (N, R) of ``lam h_k + c`` over the ball, h_k the input of layer k
    (0-based: x for k = 0, relu(z_{k-1}) after), lam (N, R, n)."""
    for i in range(k - 1, -1, -1):
        lower, upper, shift = relaxation(*bounds[i])
        pos, neg = lam.clamp_min(0), lam.clamp_max(0)
        c = c + (neg @ shift[:, :, None])[..., 0]
        lam = pos * lower[:, None, :] + neg * upper[:, None, :]
        w, b = layers[i]
        c = c + lam @ b
        lam = lam @ w
    return concretize(lam, c, x0, eps, norm)


def preactivation_bounds(layers: Layers, x0: Tensor, eps: float, norm: str,
                         crown: bool = True) -> Bounds:
    """[(l_k, u_k)] (N, n_k) of every hidden pre-activation z_k over the ball: CROWN
    intersected with IBP (``crown=False``: IBP alone; the first layer is exact either way)."""
    bounds: Bounds = []
    for k in range(len(layers) - 1):
        w, b = layers[k]
        n = len(b)
        if k == 0 or crown:
            lam = torch.cat([w, -w]).expand(len(x0), -1, -1)
            both = backward(layers, bounds, k, lam, torch.cat([b, -b]).expand(len(x0), -1),
                            x0, eps, norm)
            lo, hi = both[:, :n], -both[:, n:]
        if k > 0:
            p_lo, p_hi = bounds[-1][0].clamp_min(0), bounds[-1][1].clamp_min(0)
            mid, rad = (p_hi + p_lo) / 2 @ w.T + b, (p_hi - p_lo) / 2 @ w.abs().T
            lo, hi = (torch.maximum(lo, mid - rad), torch.minimum(hi, mid + rad)) if crown \
                else (mid - rad, mid + rad)
        bounds.append((lo, hi))
    return bounds


def margin_bounds(layers: Layers, bounds: Bounds, x0: Tensor, y: Tensor, eps: float,
                  norm: str) -> Tensor:
    """Lower bounds (N, K-1) of ``logit_y - logit_j`` given the hidden bounds: the larger
    of CROWN's and the interval bound through the last layer (both sound), so never below
    IBP's."""
    k = layers[-1][0].shape[0]
    oth = others(y, k)
    eye = torch.eye(k, dtype=x0.dtype)
    spec = eye[y][:, None, :] - eye[oth]
    w, b = layers[-1]
    lower = backward(layers, bounds, len(layers) - 1, spec @ w, spec @ b, x0, eps, norm)
    if not bounds:
        return lower
    lo, hi = bounds[-1][0].clamp_min(0), bounds[-1][1].clamp_min(0)
    wm = spec @ w
    mid, rad = (hi + lo) / 2, (hi - lo) / 2
    interval = (wm @ mid[:, :, None] - wm.abs() @ rad[:, :, None])[..., 0] + spec @ b
    return torch.maximum(lower, interval)


def unstable_counts(bounds: Bounds) -> Tensor:
    """Unstable ReLUs per sample (N,)."""
    total = torch.zeros(len(bounds[0][0]) if bounds else 0, dtype=torch.long)
    for lo, hi in bounds:
        total = total + ((lo < 0) & (hi > 0)).sum(1)
    return total


def _applies(model: nn.Module, norm: str) -> str | None:
    return reason(model)


def _run(model: nn.Module, x: Tensor, y: Tensor, eps: tuple[float, ...], norm: str,
         method: str, attack_steps: int, chunk: int) -> list[CertifyResult]:
    start = time.perf_counter()
    ops = ops_of(model)
    with torch.no_grad():
        logits = model(x)
    correct = logits.argmax(1) == y
    x0 = x.detach().flatten(1).double().cpu()
    yc = y.cpu()
    try:
        layers = network(ops, tuple(x.shape[1:])) if method == "crown" else []
    except Unsupported as exc:
        return [undecided(x, e, norm, method, f"cannot read {exc}") for e in eps]
    depth = max(len(layers), sum(op == "relu" for op in ops) + 1)
    width = max([x0.shape[1]] + [w.shape[0] for w, _ in layers])
    tol = allowance(model, logits, depth, width).cpu()
    out = []
    for e in eps:
        t0 = time.perf_counter()
        margins, unstable = [], []
        with torch.no_grad():
            for i in range(0, len(x0), chunk):
                xb, yb = x0[i:i + chunk], yc[i:i + chunk]
                if method == "ibp":
                    margins.append(ibp_margins(ops, xb.reshape(-1, *x.shape[1:]), yb, e))
                else:
                    bounds = preactivation_bounds(layers, xb, e, norm)
                    margins.append(margin_bounds(layers, bounds, xb, yb, e, norm))
                    unstable.append(unstable_counts(bounds))
        worst = torch.cat(margins).amin(1)
        certified = (worst > tol).to(x.device) & correct
        broken, x_adv = attack_witness(model, x, y, e, norm, correct & ~certified, attack_steps)
        info = {"margin": worst}
        if unstable:
            info["unstable"] = torch.cat(unstable)
        per = (time.perf_counter() - t0 + (t0 - start if e == eps[0] else 0)) / max(len(x), 1)
        out.append(result(eps=e, norm=norm, method=method, certified=certified, broken=broken,
                          x_adv=x_adv, x=x, correct=correct,
                          seconds=torch.full((len(x),), per, dtype=torch.float64),
                          reasons=[f"{method} margin bound not positive"] * len(x), info=info))
    return out


@register("crown", applies=_applies, priority=40)
def crown(model: nn.Module, x: Tensor, y: Tensor, *, eps: tuple[float, ...], norm: str,
          time_limit: float, attack_steps: int = 20, chunk: int = 64) -> list[CertifyResult]:
    """CROWN bounds of the margins of a ReLU network (sound, not complete).

    Args:
        model: a model :mod:`robustkit.certify.layers` reads (Linear, Conv2d, ReLU, ...).
        x: (N, ...) inputs in [0, 1]; y: int64 (N,) labels.
        eps: radii, one result each. norm: ``"linf"`` or ``"l2"``.
        time_limit: unused (a fixed number of passes).
        attack_steps: PGD steps tried on the samples not certified, whose verified points
            make them ``broken`` (0: no attack, those samples stay ``unknown``).
        chunk: samples per batch.

    Returns:
        One ``CertifyResult`` per eps; ``info["margin"]`` is the lower bound of
        logit_y - max_j logit_j (N,), ``info["unstable"]`` the unstable ReLUs per sample.
    """
    return _run(model, x, y, eps, norm, "crown", attack_steps, chunk)


@register("ibp", applies=_applies, priority=50)
def ibp(model: nn.Module, x: Tensor, y: Tensor, *, eps: tuple[float, ...], norm: str,
        time_limit: float, attack_steps: int = 20, chunk: int = 256) -> list[CertifyResult]:
    """Interval bounds of the margins (sound, loosest, cheapest: two passes per sample).

    For L2 the intervals start from the ball's bounding box. Arguments as :func:`crown`.

    Returns:
        One ``CertifyResult`` per eps; ``info["margin"]`` as for ``crown``.
    """
    return _run(model, x, y, eps, norm, "ibp", attack_steps, chunk)
