"""What every attack shares: the result type, the registry entry, input checks, projections.

An attack is a plain function ``attack(model, x, y, *, eps, ..., seed=0) -> AttackResult``
over x in [0, 1]; it never changes the model (parameters, their .grad, train/eval mode).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import nn

from robustkit.registry import Registry

NORMS = ("linf", "l2")


@dataclass(frozen=True, eq=False)
class AttackResult:
    """Per-sample outcome of an attack.

    Attributes:
        x_adv: adversarial inputs, same shape/device/dtype as x, in [0, 1].
        success: bool (N,): prediction on x_adv != y (untargeted) or == target (targeted).
        info: attack-specific extras (e.g. DeepFool's rho_adv, a UAP's v and history).
        pred: int64 (N,) predicted labels on x_adv, or None when the attack was asked not
            to predict (``predict=False``: then ``success`` is all False, not measured).
        x: the clean inputs the attack started from (not copied: the caller's tensor).
        delta: x_adv - x.
        steps: iterations as given by the attack (an int for all samples, or per sample).
        l2, linf: float (N,) norms of delta per sample.
        iterations: int64 (N,) iterations used per sample (1 for single-step attacks).

    ``delta``, ``l2``, ``linf`` and ``iterations`` are computed on first access (then
    kept): a single-step attack costs one forward and one backward pass, and five more
    passes over the batch would show on small batches when nobody reads them. Modifying
    ``x`` in place before reading ``delta`` changes it.
    """

    x_adv: torch.Tensor
    x: torch.Tensor = field(repr=False)
    success: torch.Tensor
    info: Mapping[str, Any] = field(default_factory=dict)
    pred: torch.Tensor | None = None
    steps: Any = field(default=1, repr=False)

    @cached_property
    def delta(self) -> torch.Tensor:
        return self.x_adv - self.x

    @cached_property
    def l2(self) -> torch.Tensor:
        return torch.linalg.vector_norm(self.delta.flatten(1), dim=1)

    @cached_property
    def linf(self) -> torch.Tensor:
        # max(amax, -amin) rather than vector_norm(ord=inf) (~20x slower on CPU).
        flat = self.delta.flatten(1)
        return torch.maximum(flat.amax(dim=1), flat.amin(dim=1).neg_())

    @cached_property
    def iterations(self) -> torch.Tensor:
        n, dev = len(self.x_adv), self.x_adv.device
        if isinstance(self.steps, int):
            return torch.full((n,), self.steps, dtype=torch.long, device=dev)
        iters = torch.as_tensor(self.steps, device=dev)
        return iters.expand(n).clone() if iters.dim() == 0 else iters


@dataclass(frozen=True)
class AttackSpec:
    """Registry entry: the function and how evaluation should drive it.

    kind: ``"fixed"`` (eps is a budget: fgsm, pgd, noise, patch), ``"minimal"`` (finds
    the smallest perturbation; eps is applied afterwards as a budget: deepfool) or
    ``"universal"`` (one v for all inputs, eps is the radius xi: uap, uap_sgd).
    ``curve`` (fixed attacks, optional): ``curve(model, x, y, *, eps: list, ...)`` returning
    one AttackResult per eps from one run over the grid (autoattack: each larger eps attacks
    only the samples that survived the smaller ones); evaluation uses it for eps lists.
    """

    name: str
    fn: Callable[..., AttackResult]
    norm: str
    kind: str = "fixed"
    doc: str = ""
    curve: Callable[..., list[AttackResult]] | None = None


ATTACKS: Registry[AttackSpec] = Registry("attack")


def register(name: str, *, norm: str, kind: str = "fixed",
             curve: Callable[..., list[AttackResult]] | None = None) -> Callable:
    """Decorator registering an attack function under ``name`` (``curve``: see AttackSpec)."""

    def deco(fn: Callable[..., AttackResult]) -> Callable[..., AttackResult]:
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        ATTACKS.add(name, AttackSpec(name, fn, norm, kind, doc, curve))
        return fn

    return deco


def make_result(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, *,
                target: torch.Tensor | None = None, iterations: Any = 1,
                info: Mapping[str, Any] | None = None, pred: torch.Tensor | None = None,
                predict: bool = True) -> AttackResult:
    """Build an ``AttackResult``, computing success and norms from x, x_adv, y.

    ``pred`` (labels predicted on x_adv, if the attack already has them) saves the forward
    pass; ``predict=False`` skips it altogether (``success`` all False, ``pred`` None): the
    fast path for callers that predict on x_adv themselves.
    """
    x_adv = x_adv.detach()
    if pred is None and predict:
        with torch.no_grad(), eval_mode(model):
            pred = model(x_adv).argmax(1)
    if pred is None:
        success = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    else:
        success = pred == target if target is not None else pred != y
    return AttackResult(x_adv, x, success, dict(info) if info else {}, pred, iterations)


def generator(seed: int, device: torch.device | str) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed`` (attacks never seed globally)."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}")
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


class eval_mode:
    """Context manager: the model in eval mode for the block, its previous (per-module)
    modes restored after.

    A class rather than a generator (it runs on every attack call), walking ``_modules``
    directly: ``model.modules()`` builds a name for every submodule.
    """

    __slots__ = ("_model", "_modes", "_mods", "_switch")

    def __init__(self, model: nn.Module) -> None:
        self._model = model
        mods, stack = [], [model]
        while stack:
            m = stack.pop()
            mods.append(m)
            stack.extend(c for c in m._modules.values() if c is not None)
        self._mods = mods
        self._modes = [m.training for m in mods]
        self._switch = any(self._modes)  # all in eval mode already: nothing to do

    def __enter__(self) -> None:
        if self._switch:
            self._model.eval()

    def __exit__(self, *exc: object) -> None:
        if self._switch:
            for m, mode in zip(self._mods, self._modes):
                m.training = mode


def input_grad(model: nn.Module, x: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of ``loss_fn(model(x)).sum()`` with respect to x, without touching the
    parameters' .grad. Returns (grad, logits)."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    (g,) = torch.autograd.grad(loss_fn(logits).sum(), x)
    return g, logits.detach()


def check_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                 eps: float | None = None, target: torch.Tensor | None = None) -> None:
    """Validate the data contract; raise ValueError/TypeError naming the parameter."""
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {type(x).__name__}")
    if not torch.is_tensor(y) or y.dtype != torch.int64:
        raise TypeError("y must be an int64 tensor")
    if y.dim() != 1 or len(y) != len(x):
        raise ValueError(f"y must have shape ({len(x)},), got {tuple(y.shape)}")
    if x.numel():
        # One pass over x (this runs on every attack call): NaN propagates through
        # aminmax, and an inf shows up as the min or max.
        lo_t, hi_t = torch.aminmax(x)
        if x.device.type == "cpu":
            lo, hi = lo_t.item(), hi_t.item()
        else:  # one device-to-host copy (one synchronization) instead of two
            lo, hi = torch.stack((lo_t, hi_t)).tolist()
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError("x contains NaN or inf")
        if lo < 0 or hi > 1:
            raise ValueError(f"x must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    if eps is not None and (not isinstance(eps, (int, float)) or math.isnan(eps) or eps < 0):
        raise ValueError(f"eps must be a number >= 0, got {eps!r}")
    if target is not None and (target.shape != y.shape or target.dtype != torch.int64):
        raise ValueError(f"target must be an int64 tensor of shape {tuple(y.shape)}")


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project per-sample perturbations (N, ...) onto the ``norm`` ball of radius eps."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    if norm == "l2":
        n = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        factor = (eps / n).clamp(max=1.0)
        return delta * factor.view(-1, *([1] * (delta.dim() - 1)))
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
