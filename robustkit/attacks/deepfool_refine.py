"""DeepFool's boundary refinement: bisection back to the boundary, and projections of x onto
the boundary's tangent plane (kept where they are smaller)."""
from __future__ import annotations

import torch
from torch import nn

from robustkit.attacks.linearize import closest_step as _step
from robustkit.attacks.linearize import differences as _differences
from robustkit.attacks.linearize import flat as _flat
from robustkit.attacks.linearize import size as _size

BISECTION_STEPS = 10


def refine(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, pred: torch.Tensor,
            label: torch.Tensor, *, rounds: int, norm: str, overshoot: float,
            mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Tighten the flipped perturbations: bisect back to the boundary, then up to
    ``rounds - 1`` times project x onto the boundary's tangent plane at the current point
    (``f + w . (z - x_b) = 0``) and keep the bisected projection where it is smaller."""
    idx = (pred != label).nonzero().squeeze(1)
    if idx.numel() == 0:
        return x_adv, pred
    x0, lab, mask = x[idx], label[idx], mask[idx]
    cur = bisect(model, x0, x_adv[idx], lab)
    size = _size(cur - x0, norm)
    for _ in range(rounds - 1):
        with torch.no_grad():
            other = model(cur).argmax(1)
        f, w, _ = _differences(model, cur, lab, other[:, None])
        f0 = f + (w[:, 0] * _flat(x0 - cur)).sum(1, keepdim=True)  # linearized f at x0
        step = _step(f0, w, _flat(x0), norm, mask).view_as(x0)
        z = (x0 + (1 + overshoot) * step).clamp(0, 1)
        with torch.no_grad():
            hit = (model(z).argmax(1) != lab).nonzero().squeeze(1)
        if hit.numel() == 0:
            break
        z = bisect(model, x0[hit], z[hit], lab[hit])
        better = _size(z - x0[hit], norm) < size[hit]
        cur[hit[better]], size[hit[better]] = z[better], _size(z[better] - x0[hit[better]], norm)
    out = x_adv.clone()
    out[idx] = cur
    with torch.no_grad():
        pred = model(out).argmax(1)
    return out, pred


@torch.no_grad()
def bisect(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, label: torch.Tensor
            ) -> torch.Tensor:
    """The smallest ``x + t * (x_adv - x)``, t in (0, 1] on a grid of 2^-10, that is still
    off ``label`` (x_adv itself is); the points stay in [0, 1] by convexity."""
    d = x_adv - x
    shape = (-1,) + (1,) * (x.dim() - 1)
    lo, hi = torch.zeros(len(x), device=x.device), torch.ones(len(x), device=x.device)
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        off = model((x + mid.view(shape).to(x.dtype) * d).clamp(0, 1)).argmax(1) != label
        hi, lo = torch.where(off, mid, hi), torch.where(off, lo, mid)
    moved = (x + hi.view(shape).to(x.dtype) * d).clamp(0, 1)
    return torch.where((hi < 1).view(shape), moved, x_adv)


def smaller(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...], x: torch.Tensor,
             y: torch.Tensor, norm: str) -> tuple[torch.Tensor, ...]:
    """Per sample, run ``b``'s (x_adv, iterations, pred) where it flips the label and
    ``a``'s does not, or both do and ``b``'s perturbation is smaller in ``norm``; also
    returns where ``b`` was taken."""
    ok_a, ok_b = a[2] != y, b[2] != y
    take = ok_b & (~ok_a | (_size(b[0] - x, norm) < _size(a[0] - x, norm)))
    shape = (-1,) + (1,) * (x.dim() - 1)
    return (torch.where(take.view(shape), b[0], a[0]), torch.where(take, b[1], a[1]),
            torch.where(take, b[2], a[2]), take)
