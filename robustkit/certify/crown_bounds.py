"""CROWN: backward linear relaxation of a ReLU network (the bounds; the "crown" method
is in :mod:`robustkit.certify.crown`).

On the dense layers of :func:`robustkit.certify.dense.network`
(``z_1 = W_1 x + b_1``, ``z_k = W_k relu(z_{k-1}) + b_k``), a lower bound of ``L z_k + c``
over the input set is found by walking back to the input: each ReLU with pre-activation
bounds ``l < 0 < u`` is replaced by a line below it (slope 1 when ``u > -l``, else 0: the
adaptive choice of Zhang et al. 2018) where the coefficient is positive, and by the chord
``u (z - l) / (u - l)`` above it where it is negative; stable ReLUs are exact. What is
left is linear in x and minimized exactly over the ball intersected with [0, 1]
(Linf: the box; L2: :func:`robustkit.certify.boxball.worst_l2`). Pre-activation bounds
are computed layer by layer the same way and intersected with IBP's. All in float64.

The same bounds as auto_LiRPA's CROWN with every intermediate neuron bounded and
intersected with IBP (benchmarks/certify_reference.py: equal to 1e-13), computed with
three shortcuts that change only the rounding: a layer on the input is bounded by two
GEMMs for all samples; only the unstable columns of a ReLU are sign-split (gathered per
sample), the rest is one multiplication; the upper bound's first product through a ReLU
is the lower bound's plus a product over the unstable columns (:func:`both_sides`).

Reference: Zhang, Weng, Chen, Hsieh & Daniel, "Efficient Neural Network Robustness
Certification with General Activation Functions", NeurIPS 2018 (arXiv:1811.00866);
Gowal et al., "On the Effectiveness of Interval Bound Propagation for Training Verifiably
Robust Models", 2018 (arXiv:1810.12715).
"""
from __future__ import annotations

import torch

from robustkit.certify.bounds import input_box, others
from robustkit.certify.boxball import worst_l2

Tensor = torch.Tensor
Layers = list[tuple[Tensor, Tensor]]
Bounds = list[tuple[Tensor, Tensor]]


def concretize(a: Tensor, c: Tensor, x0: Tensor, eps: float, norm: str) -> Tensor:
    """min of ``a x + c`` (a (N, R, D), or (R, D) shared by the samples; c (N, R)) over the
    eps-ball of x0 (N, D) in [0, 1]."""
    if norm == "l2":
        a = a.expand(len(x0), -1, -1) if a.dim() == 2 else a
        return worst_l2(a, c, x0[:, None, :], eps)[0]
    lo, hi = input_box(x0, eps)
    mid, rad = (hi + lo) / 2, (hi - lo) / 2
    if a.dim() == 2:  # one matrix for every sample: two GEMMs, nothing per sample
        return mid @ a.T - rad @ a.abs().T + c
    return (a @ mid[:, :, None] - a.abs() @ rad[:, :, None])[..., 0] + c


def relaxation(lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(lower slope, upper slope, upper intercept) of ReLU over [lo, hi]."""
    active, dead = lo >= 0, hi <= 0
    unstable = ~(active | dead)
    chord = hi / (hi - lo).clamp_min(1e-300)
    upper = torch.where(active, 1.0, torch.where(unstable, chord, 0.0)).to(lo.dtype)
    lower = torch.where(active | (unstable & (hi > -lo)), 1.0, 0.0).to(lo.dtype)
    return lower, upper, torch.where(unstable, -lo * chord, torch.zeros_like(lo))


def _columns(mask: Tensor) -> tuple[Tensor, Tensor]:
    """(idx (N, U), valid (N, U)): the True columns of each row of mask (N, n), padded
    with column 0 (``valid`` False there) to the largest count U."""
    count = mask.sum(1)
    width = int(count.max()) if len(count) else 0
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :width]
    return order, torch.arange(width, device=mask.device) < count[:, None]


def relax(lam: Tensor, c: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Move ``lam relu(z) + c`` (lam (N, R, n)) back to ``lam' z + c'`` through the
    relaxation of relu over [lo, hi]: lam' = lam * lower slope where lam > 0, lam * upper
    slope where lam < 0 (the same on stable columns, whose slopes agree), plus the upper
    intercepts where lam < 0. Only the unstable columns are sign-split, gathered per sample:
    the rest is one multiplication, where a dense sign split would make five passes."""
    lower, upper, shift = relaxation(lo, hi)
    out = lam * upper[:, None, :]
    idx, valid = _columns((lo < 0) & (hi > 0))
    if idx.shape[1]:
        at = idx[:, None, :].expand(-1, lam.shape[1], -1)
        g = lam.gather(2, at)
        # padding repeats real columns with their exact value (stable: lower == upper)
        out.scatter_(2, at, torch.where(g > 0, g * lower.gather(1, idx)[:, None, :],
                                        g * upper.gather(1, idx)[:, None, :]))
        s = torch.where(valid, shift.gather(1, idx), torch.zeros_like(lo[:, :1]))
        c = c + (g.clamp_max(0) @ s[:, :, None])[..., 0]
    return out, c


def backward(layers: Layers, bounds: Bounds, k: int, lam: Tensor, c: Tensor, x0: Tensor,
             eps: float, norm: str) -> Tensor:
    """Lower bound (N, R) of ``lam h_k + c`` over the ball, h_k the input of layer k
    (0-based: x for k = 0, relu(z_{k-1}) after), lam (N, R, n), or (R, n) shared by the
    samples."""
    if k == 0:  # the input itself: no relaxation, lam may stay shared
        return concretize(lam, c, x0, eps, norm)
    if lam.dim() == 2:
        lam = lam.expand(len(x0), -1, -1)
    for i in range(k - 1, -1, -1):
        lam, c = relax(lam, c, *bounds[i])
        w, b = layers[i]
        c = c + lam @ b
        lam = lam @ w
    return concretize(lam, c, x0, eps, norm)


def both_sides(layers: Layers, bounds: Bounds, k: int, x0: Tensor, eps: float, norm: str
               ) -> tuple[Tensor, Tensor]:
    """CROWN's (lower, upper) bounds (N, n_k) of z_k = W_k h_k + b_k (k >= 1).

    The lower bound's rows start from W_k, the upper's from -W_k, the same for every
    sample; through the first ReLU they become ``L = W+ lower + W- upper`` and ``-U`` with
    ``U = W+ upper + W- lower = L + |W| (upper - lower)``, where ``upper - lower`` is zero
    on stable columns: U's product with W_{k-1} is L's plus a product over the unstable
    columns alone, so that first (largest) product is made once instead of twice."""
    n = len(x0)
    w, b = layers[k]
    lo, hi = bounds[k - 1]
    lam, c_lo = relax(w.expand(n, -1, -1), b.expand(n, -1), lo, hi)
    lower, upper, shift = relaxation(lo, hi)
    idx, valid = _columns((lo < 0) & (hi > 0))
    gap = torch.where(valid, (upper - lower).gather(1, idx), torch.zeros_like(lo[:, :1]))
    delta = w.abs().T[idx].transpose(1, 2) * gap[:, None, :]  # (N, n_k, U)
    c_up = b + shift @ w.clamp_min(0).T
    w1, b1 = layers[k - 1]
    rows = len(b)
    a = torch.empty(n, 2 * rows, w1.shape[1], dtype=lam.dtype, device=lam.device)  # [L W_{k-1}; -U W_{k-1}]
    torch.bmm(lam, w1.expand(n, -1, -1), out=a[:, :rows])
    torch.baddbmm(a[:, :rows], delta, w1[idx], beta=-1, alpha=-1, out=a[:, rows:])
    c_lo = c_lo + lam @ b1
    c_up = c_up + lam @ b1 + (delta @ b1[idx][:, :, None])[..., 0]
    both = backward(layers, bounds, k - 1, a, torch.cat([c_lo, -c_up], 1), x0, eps, norm)
    return both[:, :rows], -both[:, rows:]


def preactivation_bounds(layers: Layers, x0: Tensor, eps: float, norm: str,
                         crown: bool = True) -> Bounds:
    """[(l_k, u_k)] (N, n_k) of every hidden pre-activation z_k over the ball: CROWN
    intersected with IBP (``crown=False``: IBP alone; the first layer is exact either way)."""
    bounds: Bounds = []
    for k in range(len(layers) - 1):
        w, b = layers[k]
        n = len(b)
        if k == 0:
            both = backward(layers, bounds, k, torch.cat([w, -w]),
                            torch.cat([b, -b]).expand(len(x0), -1), x0, eps, norm)
            lo, hi = both[:, :n], -both[:, n:]
        elif crown:
            lo, hi = both_sides(layers, bounds, k, x0, eps, norm)
        if k > 0:
            p_lo, p_hi = bounds[-1][0].clamp_min(0), bounds[-1][1].clamp_min(0)
            mid, rad = (p_hi + p_lo) / 2 @ w.T + b, (p_hi - p_lo) / 2 @ w.abs().T
            lo, hi = (torch.maximum(lo, mid - rad), torch.minimum(hi, mid + rad)) if crown \
                else (mid - rad, mid + rad)
        bounds.append((lo, hi))
    return bounds


def margin_spec(y: Tensor, k: int, dtype: torch.dtype) -> Tensor:
    """(N, K-1, K): the rows e_y - e_j of the margins, classes j != y in order."""
    eye = torch.eye(k, dtype=dtype)
    return eye[y][:, None, :] - eye[others(y, k)]


def interval_margins(spec: Tensor, w: Tensor, b: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """Lower bounds (N, R) of ``spec (W relu(z) + b)`` for z in [lo, hi] (intervals)."""
    lo, hi = lo.clamp_min(0), hi.clamp_min(0)
    wm = spec @ w
    mid, rad = (hi + lo) / 2, (hi - lo) / 2
    return (wm @ mid[:, :, None] - wm.abs() @ rad[:, :, None])[..., 0] + spec @ b


def margin_bounds(layers: Layers, bounds: Bounds, x0: Tensor, y: Tensor, eps: float,
                  norm: str) -> Tensor:
    """Lower bounds (N, K-1) of ``logit_y - logit_j`` given the hidden bounds: the larger
    of CROWN's and the interval bound through the last layer (both sound), so never below
    IBP's."""
    spec = margin_spec(y, layers[-1][0].shape[0], x0.dtype)
    w, b = layers[-1]
    lower = backward(layers, bounds, len(layers) - 1, spec @ w, spec @ b, x0, eps, norm)
    if not bounds:
        return lower
    return torch.maximum(lower, interval_margins(spec, w, b, *bounds[-1]))


def unstable_counts(bounds: Bounds) -> Tensor:
    """Unstable ReLUs per sample (N,)."""
    total = torch.zeros(len(bounds[0][0]) if bounds else 0, dtype=torch.long)
    for lo, hi in bounds:
        total = total + ((lo < 0) & (hi > 0)).sum(1)
    return total
