"""Baselines that are not optimized attacks: random noise of a given norm, and a
perturbation concentrated in one block of pixels versus the same L2 energy spread out.

``noise`` measures random robustness (Fawzi et al.: random noise needs a norm about
sqrt(d) times larger than an adversarial one); ``patch`` measures the claim that
classifiers are "robust to large local disturbances, not to diffuse ones".
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from robustkit.attacks.base import (
    AttackResult,
    check_inputs,
    check_logits,
    eval_mode,
    make_result,
    register,
)
from robustkit.attacks.fgsm import ascent_direction
from robustkit.attacks.rng import randint, randn, sample_rng
from robustkit.params import choice, integer

LOCATIONS = ("random", "center", "worst")
MODES = ("local", "diffuse")
PATTERNS = ("gradient", "random")


@register("noise", norm="linf", rules={"norm": choice("linf", "l2")})
def noise(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
          norm: str = "linf", seed: int = 0,
          sample_ids: torch.Tensor | None = None) -> AttackResult:
    """Add random noise of norm eps: +-eps signs (Linf) or a Gaussian direction (L2).

    Args:
        model: classifier returning logits (N, K); left unchanged.
        x: inputs (N, ...) in [0, 1].
        y: int64 (N,) true labels.
        eps: noise size (>= 0); every coordinate moves by +-eps (Linf) or the whole
            perturbation has L2 norm eps (L2), before clipping to [0, 1].
        norm: ``"linf"`` or ``"l2"``.
        seed: seeds the noise.
        sample_ids: int64 (N,) the samples' ids, default ``arange(N)``: random draws
            are per sample (:mod:`robustkit.attacks.rng`), not per batch.

    Returns:
        AttackResult (delta is the clipped noise actually applied).

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x, y = torch.full((2, 4), 0.5), torch.zeros(2, dtype=torch.long)
        >>> r = noise(model, x, y, eps=0.1)
        >>> bool(torch.allclose(r.delta.abs(), torch.full_like(x, 0.1)))
        True

    Reference: Fawzi, Moosavi-Dezfooli & Frossard, "Robustness of classifiers: from
    adversarial to random noise", NeurIPS 2016.
    """
    check_inputs(model, x, y, eps=eps)
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    if eps == 0:
        return make_result(model, x, x.clone(), y)
    gen = sample_rng(seed, x, sample_ids, "noise")
    if norm == "linf":
        signs = randint(gen, 0, 2, x.shape, device=x.device).to(x.dtype)
        delta = (signs * 2 - 1) * eps
    else:
        u = randn(gen, x.shape, device=x.device, dtype=x.dtype)
        delta = ascent_direction(u, "l2") * eps
    return make_result(model, x, (x.detach() + delta).clamp(0, 1), y)


@register("noise_l2", norm="l2")
def noise_l2(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
             seed: int = 0, sample_ids: torch.Tensor | None = None) -> AttackResult:
    """Add Gaussian-direction noise of L2 norm eps: ``noise(..., norm="l2")``.

    Args:
        model, x, y, eps, seed: as for :func:`noise` (eps is an L2 norm).

    Returns:
        AttackResult.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x, y = torch.full((2, 4), 0.5), torch.zeros(2, dtype=torch.long)
        >>> [round(v, 4) for v in noise_l2(model, x, y, eps=0.2).l2.tolist()]
        [0.2, 0.2]

    Reference: Fawzi, Moosavi-Dezfooli & Frossard, NeurIPS 2016.
    """
    return noise(model, x, y, eps=eps, norm="l2", seed=seed, sample_ids=sample_ids)


@register("patch", norm="l2", rules={
    "size": integer(1), "k": integer(1), "location": choice(*LOCATIONS), "mode": choice(*MODES),
    "pattern": choice(*PATTERNS)})
def patch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, size: int = 4,
          location: str = "random", mode: str = "local", pattern: str = "gradient",
          k: int = 8, seed: int = 0,
          sample_ids: torch.Tensor | None = None) -> AttackResult:
    """Spend an L2 budget eps in one square block of pixels (local) or over the whole input
    (diffuse), along the loss gradient or a random direction.

    Local mode restricts the direction to a ``size`` x ``size`` block (all channels; a
    window of ``size`` features for flat inputs) and scales it to L2 norm eps. Diffuse mode
    spreads the same energy over every pixel (with ``pattern="gradient"`` that is FGM).

    Args:
        model: classifier returning logits (N, K); left unchanged.
        x: inputs (N, C, H, W) or (N, D) in [0, 1].
        y: int64 (N,) true labels.
        eps: L2 norm of the perturbation before clipping to [0, 1] (>= 0).
        size: block side in pixels (>= 1; cut to the input size).
        location: ``"random"`` (per sample), ``"center"`` or ``"worst"`` (the best of
            ``k`` random positions per sample by cross-entropy).
        mode: ``"local"`` or ``"diffuse"`` (``size`` and ``location`` then unused).
        pattern: ``"gradient"`` (cross-entropy gradient) or ``"random"`` (Gaussian).
        k: candidate positions for ``location="worst"`` (>= 1).
        seed: seeds positions and the random pattern.
        sample_ids: int64 (N,) the samples' ids, default ``arange(N)``: random draws
            are per sample (:mod:`robustkit.attacks.rng`), not per batch.

    Returns:
        AttackResult; ``info["top"]``, ``info["left"]`` hold the block positions (local).

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> x, y = torch.full((2, 1, 4, 4), 0.5), torch.zeros(2, dtype=torch.long)
        >>> r = patch(model, x, y, eps=0.3, size=2)
        >>> int((r.delta != 0).sum(dim=(1, 2, 3)).max())
        4

    Reference: local vs diffuse perturbations, after Fawzi, Moosavi-Dezfooli & Frossard,
    NeurIPS 2016 (random vs adversarial robustness); patch-style perturbations:
    Brown et al., "Adversarial Patch", arXiv:1712.09665 (2017).
    """
    check_inputs(model, x, y, eps=eps)
    _check_patch(size, location, mode, pattern, k)
    if eps == 0:
        return make_result(model, x, x.clone(), y)
    x = x.detach()
    gen = sample_rng(seed, x, sample_ids, "patch")
    if pattern == "random":
        direction = randn(gen, x.shape, device=x.device, dtype=x.dtype)
    else:
        with eval_mode(model):
            xg = x.clone().requires_grad_(True)
            (direction,) = torch.autograd.grad(
                F.cross_entropy(model(xg), y, reduction="sum"), xg)
    if mode == "diffuse":
        return make_result(model, x, _apply(x, direction, None, eps), y)
    h, w = (x.shape[2], x.shape[3]) if x.dim() == 4 else (1, math.prod(x.shape[1:]))
    sh, sw = min(size, h), min(size, w)
    n_pos = k if location == "worst" else 1
    best_x, best_loss, best_pred = x, None, None
    tops, lefts = torch.zeros_like(y), torch.zeros_like(y)
    with eval_mode(model), torch.no_grad():
        for _ in range(n_pos):
            if location == "center":
                top, left = torch.full_like(y, (h - sh) // 2), torch.full_like(y, (w - sw) // 2)
            else:
                top = randint(gen, 0, h - sh + 1, y.shape, device=x.device)
                left = randint(gen, 0, w - sw + 1, y.shape, device=x.device)
            x_adv = _apply(x, direction, _block_mask(x, top, left, sh, sw), eps)
            if n_pos == 1:
                return make_result(model, x, x_adv, y, info={"top": top, "left": left})
            logits = check_logits(model(x_adv), len(x_adv))
            loss = F.cross_entropy(logits, y, reduction="none")
            better = torch.ones_like(y, dtype=torch.bool) if best_loss is None else loss > best_loss
            best_x = torch.where(better.view(-1, *([1] * (x.dim() - 1))), x_adv, best_x)
            best_loss = loss if best_loss is None else torch.where(better, loss, best_loss)
            pred = logits.argmax(1)
            best_pred = pred if best_pred is None else torch.where(better, pred, best_pred)
            tops, lefts = torch.where(better, top, tops), torch.where(better, left, lefts)
    return make_result(model, x, best_x, y, pred=best_pred, iterations=n_pos,
                       info={"top": tops, "left": lefts})


def _block_mask(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, sh: int, sw: int
                ) -> torch.Tensor:
    """Per-sample 0/1 mask of a sh x sw block at (top, left), broadcastable to x."""
    if x.dim() == 4:
        rows = torch.arange(x.shape[2], device=x.device)
        cols = torch.arange(x.shape[3], device=x.device)
        r = (rows >= top[:, None]) & (rows < top[:, None] + sh)
        c = (cols >= left[:, None]) & (cols < left[:, None] + sw)
        return (r[:, :, None] & c[:, None, :])[:, None].to(x.dtype)
    cols = torch.arange(math.prod(x.shape[1:]), device=x.device)
    m = (cols >= left[:, None]) & (cols < left[:, None] + sw)
    return m.to(x.dtype).reshape(x.shape)


def _apply(x: torch.Tensor, direction: torch.Tensor, mask: torch.Tensor | None, eps: float
           ) -> torch.Tensor:
    d = direction if mask is None else direction * mask
    return (x + eps * ascent_direction(d, "l2")).clamp(0, 1)


def _check_patch(size: int, location: str, mode: str, pattern: str, k: int) -> None:
    for name, value in (("size", size), ("k", k)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    for what, picked, allowed in (("location", location, LOCATIONS), ("mode", mode, MODES),
                                  ("pattern", pattern, PATTERNS)):
        if picked not in allowed:
            raise ValueError(f"{what} must be one of {allowed}, got {picked!r}")
