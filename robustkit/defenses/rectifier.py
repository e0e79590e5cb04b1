"""Akhtar et al.'s perturbation rectifying network (PRN) and the universal perturbations
it (and the detector) trains on: real UAPs computed against the model plus synthetic ones.

The PRN is a "pre-input" layer: the classifier stays as it is, the PRN learns to map a
UAP-perturbed input to one the classifier labels as it labels the clean input.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustkit.attacks.base import eval_mode, generator
from robustkit.defenses.base import DefenseContext, DefenseResult, register
from robustkit.models.registry import predict
from robustkit.params import choice, integer, number

# What the detector-like defenses (detector, prn) share.
WRAPPER_RULES = {"eps_low": number(0, 1, open_low=True), "norm": choice("linf", "l2"),
                 "n_uaps": integer(1), "n_synthetic": integer(0), "epochs": integer(1),
                 "holdout": number(0, 1, open_low=True, open_high=True),
                 "fpr": number(0, 1, open_low=True, open_high=True),
                 "uap_epochs": integer(0, none=True)}


class _ResBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.relu(h + self.conv2(F.relu(self.conv1(h))))


class Rectifier(nn.Module):
    """x -> clip(x + r(x), 0, 1), r a residual conv net (images) or an MLP (flat inputs).

    The last layer starts at zero, so an untrained rectifier is the identity.
    """

    def __init__(self, input_shape: Sequence[int], width: int = 32, blocks: int = 2,
                 hidden: int = 256) -> None:
        super().__init__()
        self.arch: dict[str, Any] = {
            "input_shape": [int(v) for v in input_shape], "width": int(width),
            "blocks": int(blocks), "hidden": int(hidden)}
        if len(input_shape) == 3:
            c = int(input_shape[0])
            self.net: nn.Module = nn.Sequential(
                nn.Conv2d(c, width, 3, padding=1), nn.ReLU(),
                *[_ResBlock(width) for _ in range(blocks)], nn.Conv2d(width, c, 3, padding=1))
        else:
            d = math.prod(input_shape)
            layers: list[nn.Module] = [nn.Flatten(), nn.Linear(d, hidden), nn.ReLU()]
            for _ in range(max(blocks - 1, 0)):
                layers += [nn.Linear(hidden, hidden), nn.ReLU()]
            self.net = nn.Sequential(*layers, nn.Linear(hidden, d))
        last = [m for m in self.net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))][-1]
        for p in last.parameters():
            nn.init.zeros_(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.net(x).reshape(x.shape)).clamp(0, 1)


def build_rectifier(arch: Mapping[str, Any]) -> Rectifier:
    """Rebuild an unfitted rectifier from its ``arch`` (``store.load(..., build=...)``)."""
    return Rectifier(**arch)


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
    from robustkit.attacks.universal import uap_sgd

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


def fit_rectifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                  xi: tuple[float, float] = (0.1, 0.3), norm: str = "linf",
                  pool: torch.Tensor | None = None, n_uaps: int = 4, n_synthetic: int = 8,
                  clean_fraction: float = 0.25, beta: float = 1.0, width: int = 32,
                  blocks: int = 2, hidden: int = 256, epochs: int = 10, lr: float = 1e-3,
                  batch_size: int = 64, seed: int = 0,
                  uap_params: Mapping[str, Any] | None = None) -> Rectifier:
    """Train a PRN so that the classifier labels rectified perturbed inputs as it labels
    the clean ones: loss = CE(model(R(x + v)), model's clean label) + beta * MSE(R(x + v), x).

    Each mini-batch draws a universal perturbation per sample from ``pool`` (real UAPs
    against ``model`` plus synthetic ones, see :func:`uap_pool`); a ``clean_fraction`` of
    the samples stays clean so that R learns to leave clean inputs alone. The classifier
    is not changed (its gradients are never accumulated); training runs on its device.
    The PRN does not guarantee anything against perturbations unlike those in its pool,
    nor against an attacker who differentiates through it (see ``defenses.adaptive``).

    Args:
        model: the fixed classifier (logits (N, K)).
        x, y: (N, ...) training inputs in [0, 1] and int64 labels (y feeds the UAPs).
        xi, norm, n_uaps, n_synthetic, uap_params: of the pool, when ``pool`` is None.
        pool: precomputed universal perturbations (K, *x.shape[1:]).
        beta: weight of the L2 term pulling R(x + v) toward x.

    Returns:
        The trained :class:`Rectifier` in eval mode, on the model's device.

    Example:
        >>> prn = fit_rectifier(model, x, y, epochs=5)  # doctest: +SKIP

    Reference: Akhtar, Liu & Mian, "Defense against Universal Adversarial Perturbations",
    CVPR 2018 (arXiv:1711.05929).
    """
    from robustkit.models.registry import model_device
    from robustkit.models.training import seeded

    if not 0 <= clean_fraction < 1:
        raise ValueError(f"clean_fraction must be in [0, 1), got {clean_fraction!r}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta!r}")
    check_counts(epochs=epochs, batch_size=batch_size)
    if pool is None:
        pool = uap_pool(model, x, y, xi=xi, norm=norm, n_uaps=n_uaps,
                        n_synthetic=n_synthetic, seed=seed, uap_params=uap_params)
    dev = model_device(model)
    pool = pool.to(dev)
    target = predict(model, x)
    with seeded(seed):
        prn = Rectifier(x.shape[1:], width=width, blocks=blocks, hidden=hidden).to(dev)
    params = list(prn.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    gen = generator(seed, "cpu")
    prn.train()
    with eval_mode(model):
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), batch_size):
                idx = order[i:i + batch_size]
                xb, tb = x[idx].to(dev), target[idx].to(dev)
                keep = (torch.rand(len(idx), generator=gen) < clean_fraction).to(dev)
                xin = torch.where(keep.view(-1, *[1] * (xb.dim() - 1)), xb,
                                  perturb_with(xb, pool, gen))
                out = prn(xin)
                loss = F.cross_entropy(model(out), tb) + beta * F.mse_loss(out, xb)
                grads = torch.autograd.grad(loss, params)
                for p, g in zip(params, grads):
                    p.grad = g
                opt.step()
    for p in params:
        p.grad = None
    return prn.eval()


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


# 16 real UAPs (not 4): the PRN generalizes to unseen UAPs from the variety of real ones.
# Measured on digits (cnn, xi 0.3, benchmarks/defenses_detector.py's scoring): system
# accuracy under a fresh UAP 0.21 with 4 real + 8 synthetic, 0.46 with 16 + 16.
@register("prn", kind="wrapper", defaults={
    "features": "dct", "positives": ("uap",), "eps_low": 1 / 3, "norm": "linf",
    "n_uaps": 16, "n_synthetic": 16, "epochs": 10, "width": 32, "blocks": 2, "beta": 1.0,
    "clean_fraction": 0.25,
    "detector_epochs": 20, "holdout": 0.2, "fpr": 0.05, "uap_epochs": None}, rules={
    **WRAPPER_RULES, "width": integer(1), "blocks": integer(0), "beta": number(0),
    "clean_fraction": number(0, 1, open_high=True), "detector_epochs": integer(1)})
def prn_defense(ctx: DefenseContext, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                eps_low: float, features: str, positives: Sequence[str], norm: str,
                n_uaps: int, n_synthetic: int, epochs: int, width: int, blocks: int, beta: float,
                clean_fraction: float, detector_epochs: int, holdout: float,
                fpr: float, uap_epochs: int | None) -> DefenseResult:
    """Akhtar et al.'s pipeline: a PRN plus a detector on the DCT of x - PRN(x); flagged
    inputs are classified after rectification.

    Both train on one pool of universal perturbations (radii in [eps_low * eps, eps])
    computed against the model. ``extras["detector"]`` holds the detector with the PRN
    inside it (``detector.rectifier``). It does not stop perturbations the detector
    misses, nor an attacker who differentiates through PRN and detector.

    Example:
        >>> res = defend("prn", "cnn", x, y, eps=0.3)  # doctest: +SKIP

    Reference: Akhtar, Liu & Mian, CVPR 2018 (arXiv:1711.05929).
    """
    import time

    from robustkit.defenses.detector import fit_detector, on_device

    base, fit_seconds = on_device(ctx, x, y)
    t0 = time.perf_counter()
    xi = (eps * eps_low, eps)
    pool = uap_pool(base, x, y, xi=xi, norm=norm, n_uaps=n_uaps, n_synthetic=n_synthetic,
                    seed=ctx.seed,
                    uap_params={} if uap_epochs is None else {"epochs": int(uap_epochs)})
    prn = fit_rectifier(base, x, y, pool=pool, beta=beta, clean_fraction=clean_fraction,
                        width=width, blocks=blocks, epochs=epochs, seed=ctx.seed)
    det = fit_detector(base, x, y, features=features, positives=positives, eps=xi,
                       norm=norm, pool=pool, rectifier=prn, epochs=detector_epochs,
                       holdout=holdout, fpr=fpr, seed=ctx.seed)
    params = {"features": features, "positives": tuple(positives), "eps": eps,
              "eps_low": eps_low, "norm": norm, "n_uaps": n_uaps, "n_synthetic": n_synthetic,
              "epochs": epochs, "width": width, "blocks": blocks, "beta": beta,
              "clean_fraction": clean_fraction,
              "detector_epochs": detector_epochs, "holdout": holdout, "fpr": fpr,
              "uap_epochs": uap_epochs}
    return DefenseResult(
        model=base.cpu().eval(), defense="prn", params=params,
        seconds=time.perf_counter() - t0,
        info={"threshold": float(det.threshold), "pool_size": len(pool),
              "base_fit_seconds": fit_seconds},
        extras={"detector": det.cpu().eval()})
