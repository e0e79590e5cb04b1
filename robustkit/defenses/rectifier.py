"""Akhtar et al.'s perturbation rectifying network (PRN); the universal perturbations it
trains on come from :mod:`robustkit.defenses.pool`.

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
from robustkit.defenses.base import descend
from robustkit.defenses.pool import check_counts, perturb_with, uap_pool
from robustkit.models.registry import model_device, predict
from robustkit.models.training import seeded


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
                descend(opt, params, loss)
    for p in params:
        p.grad = None
    return prn.eval()
