"""The universal perturbations detectors and rectifiers train on: real UAPs computed
against the model plus synthetic ones, and the argument checks both share.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from robustkit.attacks.base import generator
from robustkit.attacks.universal import uap_sgd


def uap_pool(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
             xi: tuple[float, float] = (0.1, 0.3), norm: str = "linf", n_uaps: int = 4,
             n_synthetic: int = 8, fit_size: int | None = 2000, seed: int = 0,
             uap_params: Mapping[str, Any] | None = None) -> torch.Tensor:
    """Universal perturbations to train on: ``n_uaps`` from ``uap_sgd`` against the model
    (radii spread over ``xi``, seeds ``seed + 1 ...``) and ``n_synthetic`` synthetic ones.

    A synthetic perturbation is a random convex combination of the real ones, projected
    to a random radius in ``xi``: its sign pattern times the radius for Linf (real Linf
    UAPs sit on the box corners), rescaled to the radius for L2. This is a cheap stand-in
    for Akhtar et al.'s synthetic-perturbation algorithm (which grows perturbations from
    the real ones' fooling directions); it adds variety, not new fooling directions.

    Args:
        model: the classifier to compute the real UAPs against (left unchanged).
        x, y: (N, ...) inputs in [0, 1] and int64 labels; a ``fit_size`` subset is used.
        xi: (low, high) radii; norm: ``"linf"`` or ``"l2"``.
        uap_params: further keyword arguments of ``uap_sgd`` (epochs, batch size, ...).

    Returns:
        Tensor (n_uaps + n_synthetic, *x.shape[1:]).

    Example:
        >>> pool = uap_pool(model, x, y, n_uaps=2, n_synthetic=2)  # doctest: +SKIP
    """
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    lo, hi = check_range(xi, "xi", norm)
    if n_uaps < 1 or n_synthetic < 0:
        raise ValueError(f"need n_uaps >= 1 and n_synthetic >= 0, got {n_uaps}, {n_synthetic}")
    gen = generator(seed, "cpu")
    if fit_size is not None and fit_size < len(x):
        idx = torch.randperm(len(x), generator=gen)[:fit_size]
        x, y = x[idx], y[idx]
    radii = torch.linspace(lo, hi, n_uaps).tolist() if n_uaps > 1 else [hi]
    real = [uap_sgd(model, x, y, xi=float(r), norm=norm, seed=seed + 1 + k,
                    **dict(uap_params or {})).v.detach().cpu().reshape(x.shape[1:])
            for k, r in enumerate(radii)]
    vs = torch.stack(real)
    syn = []
    for _ in range(n_synthetic):
        w = _dirichlet(len(vs), gen)
        mix = torch.einsum("k,k...->...", w, vs)
        r = lo + (hi - lo) * float(torch.rand((), generator=gen))
        syn.append(_to_radius(mix, r, norm))
    return torch.cat([vs, torch.stack(syn)]) if syn else vs


def check_counts(**values: int) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")


def _dirichlet(k: int, gen: torch.Generator) -> torch.Tensor:
    e = -torch.log(torch.rand(k, generator=gen).clamp_min(1e-12))
    return e / e.sum()


def _to_radius(v: torch.Tensor, r: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return v.sign() * r
    return v * (r / v.norm().clamp_min(1e-12))


def perturb_with(x: torch.Tensor, pool: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Add one randomly drawn member of ``pool`` to every input, clipped to [0, 1]."""
    pick = torch.randint(len(pool), (len(x),), generator=gen)
    return (x + pool[pick].to(x)).clamp(0, 1)


def check_range(r: Any, name: str, norm: str = "linf") -> tuple[float, float]:
    # Linf radii live in (0, 1] on [0, 1] inputs; L2 radii may exceed 1.
    top = 1.0 if norm == "linf" else math.inf
    if isinstance(r, (int, float)) and not isinstance(r, bool):
        r = (r, r)
    if (not isinstance(r, (tuple, list)) or len(r) != 2
            or not all(isinstance(v, (int, float)) for v in r) or not 0 < r[0] <= r[1] <= top):
        raise ValueError(f"{name} must be a number or a (low, high) pair with "
                         f"0 < low <= high{' <= 1' if top == 1 else ''}, got {r!r}")
    return float(r[0]), float(r[1])
