"""A linear function over the eps-ball intersected with the [0, 1] box, in closed form.

For ``f(x0 + d) = a . (x0 + d) + c`` every problem here moves each coordinate toward the
box edge that lowers f: ``d_i = -sign(a_i) * amount_i`` with ``0 <= amount_i <= t_i``,
``t_i`` the room to that edge (x0_i where a_i > 0, 1 - x0_i where a_i < 0). Then

- Linf ball: ``amount_i = min(eps, t_i)`` is the exact minimizer (the ball in the box is a
  box): :func:`worst_linf`.
- L2 ball: the minimizer is ``amount_i = min(|a_i| s, t_i)`` for the step s at which
  ``||amount|| = eps`` (the KKT point of a convex problem; s = 1/mu, mu the multiplier of
  the ball). ``||amount(s)||`` is piecewise of the form ``C + A s^2`` between the sorted
  breakpoints ``t_i / |a_i|``, so s is found exactly by one sort: :func:`worst_l2`. The
  value returned is the Lagrangian dual ``g(mu) = min_{d in box} a.d + mu/2 (||d||^2 -
  eps^2)`` at that mu, a lower bound of the minimum by weak duality for *any* mu >= 0, so
  it stays sound whatever the rounding of s.
- Minimal distances to ``f <= 0`` inside the box (the smallest eps at which the minimum
  reaches 0): Linf ``sum |a_i| min(tau, t_i) = f(x0)`` is piecewise linear in tau
  (:func:`dist_linf`); L2 is the projection onto a halfspace within the box, ``amount_i =
  min(|a_i| s, t_i)`` again, with the dual bound ``sqrt(2 h(s))`` of the distance
  (:func:`dist_l2`). Infinite where even the far box corner keeps ``f > 0``.

Every function takes a (..., D), x0 broadcastable to it, and works on the last axis in the
dtype given (float64 is what the certificates pass).
"""
from __future__ import annotations

import torch

Tensor = torch.Tensor


def room(a: Tensor, x0: Tensor) -> Tensor:
    """t: how far each coordinate can move in the direction that lowers ``a . x``
    (0 where a_i = 0)."""
    t = torch.where(a > 0, x0, 1 - x0).clamp_min(0)
    return torch.where(a == 0, torch.zeros_like(t), t)


def point(a: Tensor, x0: Tensor, amount: Tensor) -> Tensor:
    """x0 + d with d_i = -sign(a_i) amount_i, clipped to [0, 1] against rounding."""
    return (x0 - torch.sign(a) * amount).clamp(0, 1)


def worst_linf(a: Tensor, c: Tensor, x0: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """``min a.x + c`` over the Linf ball of radius eps around x0 inside [0, 1]: the value
    (...) and the minimizing amounts (..., D)."""
    amount = room(a, x0).clamp_max(eps)
    return (a * x0).sum(-1) + c - (a.abs() * amount).sum(-1), amount


def _sorted(key: Tensor, *values: Tensor) -> tuple[Tensor, ...]:
    order = key.argsort(dim=-1)
    return (key.gather(-1, order),) + tuple(v.gather(-1, order) for v in values)


def _first(hit: Tensor) -> tuple[Tensor, Tensor]:
    """Index of the first True on the last axis (clamped to the axis) and whether any."""
    found = hit.any(-1)
    k = torch.where(found, hit.float().argmax(-1), torch.zeros_like(found, dtype=torch.long))
    return k, found


def _before(cum: Tensor, k: Tensor) -> Tensor:
    """cum[..., k - 1], 0 where k = 0 (a sum over the first k sorted entries)."""
    padded = torch.cat([torch.zeros_like(cum[..., :1]), cum], -1)
    return padded.gather(-1, k[..., None])[..., 0]


def _l2_breaks(a: Tensor, x0: Tensor) -> tuple[Tensor, ...]:
    """The room t of each coordinate, |a|, and (sorted by it) the multiplier t/|a| at which
    the L2 projection meets that coordinate's box face, with t and |a| in the same order."""
    t = room(a, x0)
    mag = a.abs()
    bp = torch.where(mag > 0, t / mag.clamp_min(1e-300), torch.zeros_like(t))
    return (t, mag) + _sorted(bp, t, mag)


def worst_l2(a: Tensor, c: Tensor, x0: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """``min a.x + c`` over the L2 ball of radius eps around x0 inside [0, 1]: a sound
    lower bound of the value (the dual, equal to the minimum up to rounding) and the
    minimizing amounts."""
    t, mag, bps, ts, ms = _l2_breaks(a, x0)
    clipped = torch.cumsum(ts * ts, -1)
    rest = (ms * ms).sum(-1, keepdim=True) - torch.cumsum(ms * ms, -1)
    norm2_at = clipped + bps * bps * rest.clamp_min(0)
    k, found = _first(norm2_at >= eps * eps)
    c_k = _before(clipped, k)
    a_k = (ms * ms).sum(-1) - _before(torch.cumsum(ms * ms, -1), k)
    s = torch.sqrt((eps * eps - c_k).clamp_min(0) / a_k.clamp_min(1e-300))
    s = torch.where(found, s, torch.full_like(s, float("inf")))
    amount = torch.where(torch.isinf(s)[..., None], t, torch.minimum(mag * s[..., None], t))
    value = (a * x0).sum(-1) + c - (mag * amount).sum(-1)
    finite = torch.isfinite(s) & (s > 0)
    # the multiplier's term of the dual: mu/2 (||d||^2 - eps^2), mu = 1/s
    gap = ((amount * amount).sum(-1) - eps * eps) / (2 * torch.where(finite, s, 1.0))
    return value + torch.where(finite, gap, torch.zeros_like(gap)), amount


def dist_linf(a: Tensor, m: Tensor, x0: Tensor) -> tuple[Tensor, Tensor]:
    """Smallest Linf radius tau at which ``a.d <= -m`` is reachable inside the box
    (m > 0; inf where never) and the amounts of that point."""
    t = room(a, x0)
    ts, ms = _sorted(t, a.abs())
    done = torch.cumsum(ms * ts, -1)
    rest = ms.sum(-1, keepdim=True) - torch.cumsum(ms, -1)
    k, found = _first(done + ts * rest >= m[..., None])
    p = _before(done, k)
    r = ms.sum(-1) - _before(torch.cumsum(ms, -1), k)
    tau = torch.where(found, (m - p) / r.clamp_min(1e-300), torch.full_like(m, float("inf")))
    tau = tau.clamp_min(0)
    amount = torch.where(found[..., None], torch.minimum(t, tau[..., None]), t)
    return tau, amount


def dist_l2(a: Tensor, m: Tensor, x0: Tensor) -> tuple[Tensor, Tensor]:
    """Smallest L2 distance at which ``a.d <= -m`` is reachable inside the box (m > 0):
    a sound lower bound (the dual) of it (inf where never) and the amounts of the
    projection point."""
    t, mag, bps, ts, ms = _l2_breaks(a, x0)
    done = torch.cumsum(ms * ts, -1)
    rest = (ms * ms).sum(-1, keepdim=True) - torch.cumsum(ms * ms, -1)
    k, found = _first(done + bps * rest.clamp_min(0) >= m[..., None])
    p = _before(done, k)
    q = (ms * ms).sum(-1) - _before(torch.cumsum(ms * ms, -1), k)
    s = ((m - p) / q.clamp_min(1e-300)).clamp_min(0)
    amount = torch.where(found[..., None], torch.minimum(mag * s[..., None], t), t)
    # dual of min ||d||^2/2 s.t. a.d <= -m over the box, at nu = s
    h = 0.5 * (amount * amount).sum(-1) + s * (m - (mag * amount).sum(-1))
    dist = torch.sqrt(h.clamp_min(0) * 2)
    return torch.where(found, dist, torch.full_like(dist, float("inf"))), amount
