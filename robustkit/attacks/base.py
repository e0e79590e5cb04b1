"""What every attack shares: the result type, the registry entry, input checks, projections
(the checks and the model calls live in ``checks`` and ``model_calls``, re-exported here).

An attack is a plain function ``attack(model, x, y, *, eps, ..., seed=0) -> AttackResult``
over x in [0, 1]; it never changes the model (parameters, their .grad, train/eval mode).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import nn

from robustkit.attacks.checks import check_inputs
from robustkit.attacks.model_calls import check_logits, eval_mode, input_grad, n_classes
from robustkit.attacks.passes import counted
from robustkit.params import Rule, problems, rules_from
from robustkit.registry import Registry

NORMS = ("linf", "l2")
__all__ = ["ATTACKS", "CALLER_ARGS", "NORMS", "AttackResult", "AttackSpec", "check_inputs",
           "check_logits", "eval_mode", "generator", "input_grad", "make_result", "n_classes",
           "project", "register"]


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
    rules: what each hyperparameter allows (``robustkit.params``): the rules declared at
    registration, plus for every other keyword-only parameter the rule its default's type
    implies. ``check`` applies them without running anything.
    """

    name: str
    fn: Callable[..., AttackResult]
    norm: str
    kind: str = "fixed"
    doc: str = ""
    rules: Mapping[str, Rule] = field(default_factory=dict)
    curve: Callable[..., list[AttackResult]] | None = None

    def parameters(self) -> list[str] | None:
        """The hyperparameters a caller may set (not model, x, y, eps, seed), or None when
        the function forwards arbitrary keywords (the foolbox bridge)."""
        sig = inspect.signature(self.fn).parameters.values()
        named = [p.name for p in sig if p.kind is p.KEYWORD_ONLY and p.name not in CALLER_ARGS]
        if any(p.kind is p.VAR_KEYWORD for p in sig):
            return sorted(set(named) | set(self.rules) - set(CALLER_ARGS)) if self.rules else None
        return named

    def check(self, params: Mapping[str, Any]) -> list[str]:
        """Every problem of ``params`` (unknown names, values their rule rejects); empty
        when they are valid.

        Example:
            >>> from robustkit.attacks import get
            >>> get("pgd").check({"steps": -3})
            ["attack 'pgd': steps=-3 is not valid: expected an integer >= 1"]
        """
        valid = self.parameters()
        unknown = [] if valid is None else sorted(set(params) - set(valid))
        out = [(f"unknown parameter(s) {unknown} for attack {self.name!r}; valid: "
                f"{', '.join(sorted(valid or [])) or '(none)'}")] if unknown else []
        return out + problems(params, self.rules, prefix=f"attack {self.name!r}: ")


# Arguments every attack takes from its caller rather than as a hyperparameter.
CALLER_ARGS = ("eps", "seed", "fit_x", "fit_y", "sample_ids")

ATTACKS: Registry[AttackSpec] = Registry("attack")


def register(name: str, *, norm: str, kind: str = "fixed",
             rules: Mapping[str, Rule] | None = None,
             curve: Callable[..., list[AttackResult]] | None = None) -> Callable:
    """Decorator registering an attack function under ``name``.

    ``rules`` declares what hyperparameters allow (``robustkit.params``: ``integer(1)``,
    ``choice("ce", "margin")``...); keyword-only parameters without one are checked against
    their default's type. ``curve``: see AttackSpec.
    """

    def deco(fn: Callable[..., AttackResult]) -> Callable[..., AttackResult]:
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        defaults = {p.name: p.default for p in inspect.signature(fn).parameters.values()
                    if p.kind is p.KEYWORD_ONLY and p.name not in ("eps", "fit_x", "fit_y", "sample_ids")
                    and p.default is not p.empty}
        wrapped = counted(fn)
        ATTACKS.add(name, AttackSpec(name, wrapped, norm, kind, doc,
                                     rules_from(defaults, rules), curve))
        return wrapped

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
            pred = check_logits(model(x_adv), len(x_adv)).argmax(1)
    elif pred is not None and pred.shape != (len(x),):
        raise ValueError(f"pred must have shape ({len(x)},), got {tuple(pred.shape)} (does "
                         f"the model return one row of logits per input?)")
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


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project per-sample perturbations (N, ...) onto the ``norm`` ball of radius eps."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    if norm == "l2":
        n = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        factor = (eps / n).clamp(max=1.0)
        return delta * factor.view(-1, *([1] * (delta.dim() - 1)))
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
