"""Soundness checks shared by the kernel and Gaussian certificate tests: an exhaustive grid
inside every certified ball, and PGD inside the ball, find no adversarial point."""
from __future__ import annotations

import torch

from robustkit.attacks import get as get_attack
from robustkit.certify import CertifyResult, check_against_attack, verify_witness


def grid_in_ball(x: torch.Tensor, eps: float, norm: str, steps: int = 61) -> torch.Tensor:
    """Points (steps^2 or fewer, 2) of a regular grid over the ball of a 2-D point x,
    clipped to [0, 1] (L2: only the grid points inside the ball)."""
    g = torch.linspace(-eps, eps, steps, dtype=x.dtype)
    d = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    if norm == "l2":
        d = d[torch.linalg.vector_norm(d.double(), dim=1) <= eps]
    return (x + d).clamp(0, 1)


def assert_sound_2d(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                    res: CertifyResult) -> int:
    """No grid point of a certified ball is misclassified; every witness verifies; PGD
    with restarts breaks no certified sample. Returns the number of certified samples."""
    for i in res.certified.nonzero().squeeze(1).tolist():
        pts = grid_in_ball(x[i], res.eps, res.norm)
        with torch.no_grad():
            pred = model(pts).argmax(1)
        assert bool((pred == y[i]).all()), f"sample {i}: grid point misclassified"
    if bool(res.broken.any()):
        b = res.broken
        assert bool(verify_witness(model, x[b], y[b], res.x_adv[b], res.eps, res.norm).all())
    pgd = get_attack("pgd").fn(model, x, y, eps=res.eps, norm=res.norm, steps=20,
                               restarts=3, loss="margin")
    check_against_attack(res, pgd.success, pgd.x_adv, model=model, x=x, y=y, what="pgd")
    return int(res.certified.sum())
