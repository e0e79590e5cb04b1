"""Exact minimal-norm projection onto a hyperplane inside the [0, 1] box (Linf and L2).

FAB's inner step: the smallest ``delta`` with ``<w, x + delta> + b = 0`` and
``0 <= x + delta <= 1``. Both norms reduce to one scalar equation. Flip signs so that the
needed change ``c = -(<w, x> + b)`` is >= 0 (``v = sign(c) w``); each coordinate may then
move by at most ``cap_i`` (1 - x_i or x_i) in the direction of ``v_i``, and the optimum is
``delta_i = sign(v_i) min(lam, cap_i)`` (Linf) or ``delta_i = v_i min(lam, cap_i / |v_i|)``
(L2, the KKT form ``clip(lam v_i)``): ``<v, delta> = sum_i a_i min(lam, r_i)`` with
``a_i = |v_i|, r_i = cap_i`` (Linf) or ``a_i = v_i^2, r_i = cap_i / |v_i|`` (L2) is
piecewise linear and non-decreasing in lam, so sorting the breakpoints ``r`` gives the
segment holding ``|c|`` and lam exactly there (no bisection, O(D log D) per row).
"""
from __future__ import annotations

import torch

from robustkit.attacks.base import NORMS


def project_to_hyperplane(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, *, norm: str
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the minimal-``norm`` step onto ``{z in [0, 1]^D : <w, z> + b = 0}`` from x.

    Args:
        x: points (..., D) in [0, 1].
        w: hyperplane normals (..., D), same shape as x.
        b: offsets (...).
        norm: ``"linf"`` or ``"l2"``.

    Returns:
        ``(delta, feasible)``: delta (..., D) with ``x + delta`` in [0, 1]; feasible (...)
        bool, False where the box does not reach the hyperplane (then delta is the box
        corner that comes closest: every coordinate moved as far as it can toward it).

    Example:
        >>> x, w = torch.full((1, 2), 0.5), torch.tensor([[1.0, 1.0]])
        >>> delta, ok = project_to_hyperplane(x, w, torch.tensor([-1.5]), norm="linf")
        >>> delta.tolist(), bool(ok)
        ([[0.25, 0.25]], True)
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if x.shape != w.shape or b.shape != x.shape[:-1]:
        raise ValueError(f"x, w must have one shape (..., D) and b (...), got "
                         f"{tuple(x.shape)}, {tuple(w.shape)}, {tuple(b.shape)}")
    c = -((w * x).sum(-1) + b)
    v = torch.where(c[..., None] < 0, -w, w)
    need = c.abs()
    cap = torch.where(v > 0, 1 - x, x)
    if norm == "linf":
        a, r = v.abs(), cap
    else:
        a = v * v
        # coordinates with v_i = 0 contribute nothing (a_i = 0): any finite r_i will do
        r = torch.where(a > 0, cap / v.abs().clamp_min(torch.finfo(v.dtype).tiny),
                        torch.zeros_like(cap))
    lam, feasible = _solve(a, r, need)
    reach = torch.minimum(lam[..., None], r)
    delta = v.sign() * reach if norm == "linf" else v * reach
    # x + delta lies in the box in exact arithmetic; the clamp removes rounding.
    return (x + delta).clamp(0, 1) - x, feasible


def _solve(a: torch.Tensor, r: torch.Tensor, need: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """The smallest lam >= 0 with ``sum_i a_i min(lam, r_i) = need`` per row (a, r >= 0;
    need >= 0); inf where even lam = max(r) falls short. Returns (lam, feasible)."""
    r_sorted, order = r.sort(-1)
    a_sorted = a.gather(-1, order)
    cum_a = a_sorted.cumsum(-1)
    cum_ar = (a_sorted * r_sorted).cumsum(-1)
    total = cum_a[..., -1:]
    # value of the sum at each breakpoint: those below it saturated, the rest at r_k
    at_break = cum_ar + r_sorted * (total - cum_a)
    k = (at_break < need[..., None]).sum(-1, keepdim=True)  # breakpoints passed
    feasible = (k < r.shape[-1]).squeeze(-1)
    prev = (k - 1).clamp_min(0)
    done_ar = torch.where(k > 0, cum_ar.gather(-1, prev), torch.zeros_like(total))
    done_a = torch.where(k > 0, cum_a.gather(-1, prev), torch.zeros_like(total))
    slope = total - done_a
    lam = torch.where(slope > 0, (need[..., None] - done_ar) / slope.clamp_min(
        torch.finfo(a.dtype).tiny), torch.zeros_like(slope)).squeeze(-1)
    lam = torch.where(feasible, lam.clamp_min(0), torch.full_like(lam, float("inf")))
    return lam, feasible
