"""What every attack shares: the result type, the registry entry, input checks, projections.

An attack is a plain function ``attack(model, x, y, *, eps, ..., seed=0) -> AttackResult``
over x in [0, 1]; it never changes the model (parameters, their .grad, train/eval mode).
"""
from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import nn

from robustkit.params import Rule, problems, rules_from
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
CALLER_ARGS = ("eps", "seed", "fit_x", "fit_y")

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
                    if p.kind is p.KEYWORD_ONLY and p.name not in ("eps", "fit_x", "fit_y")
                    and p.default is not p.empty}
        ATTACKS.add(name, AttackSpec(name, fn, norm, kind, doc, rules_from(defaults, rules),
                                     curve))
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
                 eps: float | None = None, target: torch.Tensor | None = None) -> int | None:
    """Validate the data contract before any work; raise ValueError/TypeError naming the
    parameter. Returns the model's class count K (None for an empty batch).

    Besides x, y, eps and target themselves, it checks that y (and target) hold classes in
    [0, K). K is ``model.arch["n_classes"]`` for robustkit models; for other models one
    forward pass on x's first two rows finds it, checking that the model takes x (shape,
    dtype) and returns finite logits (rows, K).
    """
    if not torch.is_tensor(x) or not x.is_floating_point():
        got = f"a {x.dtype} tensor" if torch.is_tensor(x) else type(x).__name__
        raise TypeError(f"x must be a floating-point tensor, got {got}")
    if x.dim() < 2:
        raise ValueError(f"x must be a batch (N, ...) with N the first axis, got shape "
                         f"{tuple(x.shape)}")
    if not torch.is_tensor(y) or y.dtype != torch.int64:
        got = f"a {y.dtype} tensor" if torch.is_tensor(y) else type(y).__name__
        raise TypeError(f"y must be an int64 tensor, got {got}")
    if y.dim() != 1 or len(y) != len(x):
        raise ValueError(f"y must have shape ({len(x)},), got {tuple(y.shape)}")
    if y.device != x.device:
        raise ValueError(f"y is on {y.device} but x is on {x.device}; put them on one device")
    check_not_meta(model, x)
    if x.numel():
        # One pass over x (this runs on every attack call): NaN propagates through
        # aminmax, and an inf shows up as the min or max.
        lo, hi = _range(x)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError("x contains NaN or inf")
        if lo < 0 or hi > 1:
            raise ValueError(f"x must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    if eps is not None and (isinstance(eps, bool) or not isinstance(eps, numbers.Real)
                            or not math.isfinite(eps) or eps < 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    if target is not None and (not torch.is_tensor(target) or target.shape != y.shape
                               or target.dtype != torch.int64):
        raise ValueError(f"target must be an int64 tensor of shape {tuple(y.shape)}")
    if len(x) == 0:
        return None
    arch = getattr(model, "arch", None)
    known = arch.get("n_classes") if isinstance(arch, dict) else None
    # robustkit models know their class count (and check x's shape in forward); the
    # attack's own forward passes check their logits (make_result, pgd, deepfool)
    k = known if isinstance(known, int) and known >= 2 else n_classes(model, x)
    for name, labels in (("y", y), ("target", target)):
        if labels is not None:
            lo_l, hi_l = _range(labels)
            if lo_l < 0 or hi_l >= k:
                raise ValueError(f"{name} must hold class indices in [0, {k}) (the model "
                                 f"returns {k} logits), got values in [{lo_l}, {hi_l}]")
    return k


def check_not_meta(model: nn.Module, x: torch.Tensor) -> None:
    """Meta tensors have shapes and no data: refuse them before any raw torch error."""
    if x.device.type == "meta":
        raise ValueError("x is a meta tensor (a shape without data); attacks need inputs on "
                         "'cpu' or 'cuda'")
    meta = next((n for n, t in [*model.named_parameters(), *model.named_buffers()]
                 if t.device.type == "meta"), None)
    if meta is not None:
        raise ValueError(f"the model's tensor {meta!r} is on the meta device (no data): "
                         f"load its weights first (model.to_empty(device='cpu') then "
                         f"load_state_dict, or robustkit.store.load)")


def _range(t: torch.Tensor) -> tuple[Any, Any]:
    lo_t, hi_t = torch.aminmax(t)
    if t.device.type == "cpu":
        return lo_t.item(), hi_t.item()
    # one device-to-host copy (one synchronization) instead of two
    lo, hi = torch.stack((lo_t, hi_t)).tolist()
    return lo, hi


def n_classes(model: nn.Module, x: torch.Tensor) -> int:
    """The model's class count K from one forward pass on x's first two rows (eval mode, no
    gradient), checking that the model takes x and returns finite logits (rows, K): two rows,
    so that a model returning a fixed number of rows is caught too."""
    probe = x[:2]
    with torch.no_grad(), eval_mode(model):
        try:
            out = model(probe)
        except RuntimeError as exc:
            dtypes = {p.dtype for p in model.parameters()}
            if dtypes and x.dtype not in dtypes and "dtype" in str(exc).lower():
                raise TypeError(f"x is {x.dtype} but the model computes in "
                                f"{', '.join(map(str, dtypes))}: cast x (x.to(...)) or the "
                                f"model ({exc})") from exc
            raise ValueError(f"the model cannot take x of shape {tuple(x.shape)} "
                             f"({type(exc).__name__}: {exc})") from exc
    check_logits(out, len(probe))
    return int(out.shape[1])


def check_logits(logits: Any, n: int) -> torch.Tensor:
    """Raise ValueError unless ``logits`` is a finite tensor (n, K), K >= 2: a model that
    returns another number of rows or NaN would otherwise give silent, wrong successes."""
    if not torch.is_tensor(logits) or not logits.is_floating_point():
        got = f"a {logits.dtype} tensor" if torch.is_tensor(logits) else type(logits).__name__
        raise ValueError(f"the model must return floating-point logits (N, n_classes), "
                         f"got {got}")
    if logits.dim() != 2 or logits.shape[0] != n or logits.shape[1] < 2:
        raise ValueError(f"the model must return logits of shape (N, n_classes) with "
                         f"n_classes >= 2; for {n} input(s) it returned shape "
                         f"{tuple(logits.shape)}")
    # one reduction: a NaN or an inf anywhere makes the sum non-finite
    if not math.isfinite(float(logits.sum())):
        raise ValueError("the model returned NaN or infinite logits")
    return logits


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project per-sample perturbations (N, ...) onto the ``norm`` ball of radius eps."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    if norm == "l2":
        n = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        factor = (eps / n).clamp(max=1.0)
        return delta * factor.view(-1, *([1] * (delta.dim() - 1)))
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
