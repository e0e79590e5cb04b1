"""FAB's last move: tighten each run's best point, so that FAB is exact on linear models.

FAB's iterates stop about (eta - 1)(1 - beta) beyond the boundary. ``tighten`` makes
POLISH_ROUNDS projections of x onto the boundary linearized at the best point, aimed
POLISH_MARGIN * |f(x)| past it (so that the projection lands adversarial), then a line
search of SHRINK_STEPS halvings toward x; both only ever shrink the perturbation.
"""
from __future__ import annotations

import torch
from torch import nn

from robustkit.attacks.hyperplane import project_to_hyperplane
from robustkit.attacks.linearize import differences as _differences

POLISH_ROUNDS = 2
POLISH_MARGIN = 1e-4
SHRINK_STEPS = 20


def tighten(model: nn.Module, x0: torch.Tensor, found: torch.Tensor, y: torch.Tensor,
             norm: str) -> torch.Tensor:
    """Smaller adversarial points near ``found`` (all off y): polish, then shrink (above)."""
    flat0 = x0.flatten(1)
    for _ in range(POLISH_ROUNDS):
        with torch.no_grad():
            other = model(found).argmax(1)
        f, g, _ = _differences(model, found, y, other[:, None])
        f, g, flat = f[:, 0], g[:, 0], found.flatten(1)
        f0 = f + (g * (flat0 - flat)).sum(1)  # the linearization's value at x0
        b = f - (g * flat).sum(1) - POLISH_MARGIN * f0.abs()
        step, ok = project_to_hyperplane(flat0, g, b, norm=norm)
        z = (flat0 + step).view_as(x0)
        with torch.no_grad():
            ok &= model(z).argmax(1) != y
        ok &= size(z - x0, norm) < size(found - x0, norm)
        found = torch.where(ok.view(-1, *[1] * (x0.dim() - 1)), z, found)
    return shrink(model, x0, found, y, norm)


@torch.no_grad()
def shrink(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
            norm: str) -> torch.Tensor:
    """The smallest ``x + t d`` (L2) or ``x + clamp(d, -t, t)`` (Linf: the box-constrained
    optimum keeps this form), d = x_adv - x, still off y, to 2^-SHRINK_STEPS of ||d||;
    x_adv is off y. Both stay in [0, 1]: every coordinate moves toward x."""
    d = x_adv - x
    shape = (-1,) + (1,) * (x.dim() - 1)
    top = size(d, norm).view(shape)
    lo = torch.zeros(len(x), dtype=x.dtype, device=x.device)
    hi = torch.ones_like(lo)

    def at(t: torch.Tensor) -> torch.Tensor:
        t = t.view(shape)
        return x + (t * d if norm == "l2" else torch.maximum(torch.minimum(d, t * top),
                                                               -t * top))

    for _ in range(SHRINK_STEPS):
        mid = (lo + hi) / 2
        off = model(at(mid)).argmax(1) != y
        hi, lo = torch.where(off, mid, hi), torch.where(off, lo, mid)
    return torch.where((hi < 1).view(shape), at(hi), x_adv)


def size(d: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample ``norm`` of d (N, ...)."""
    return last(d.flatten(1), norm)


def last(t: torch.Tensor, norm: str) -> torch.Tensor:
    return t.norm(dim=-1) if norm == "l2" else t.abs().amax(-1)
