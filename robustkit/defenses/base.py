"""What every defense shares: the context it runs in, its result, the registry entry.

A defense is a plain function ``defense(ctx, x, y, *, eps, **params) -> DefenseResult``
registered with ``@register(name, families=..., defaults=...)``. ``ctx`` says which model
family to train (or which fitted model to wrap), the seed, the device, where to checkpoint;
``params`` are the defense's own hyperparameters, validated against ``defaults`` by
``robustkit.defenses.defend`` before the call.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustkit.models._torchfit import TRAIN_CHOICES, TRAIN_RULES
from robustkit.models.registry import ModelSpec
from robustkit.models.training import OnEpoch
from robustkit.params import Rule, choice, optional, problems, rules_from
from robustkit.registry import Registry

KINDS = ("training", "wrapper")


@dataclass(frozen=True)
class DefenseContext:
    """Where and how a defense runs (everything that is not a hyperparameter).

    Attributes:
        spec: the model family and its parameters (``models.create(...)``).
        n_classes: number of classes K.
        seed: seeds initialization, batch order and every attack inside the defense.
        device: where training runs; the returned model is on the CPU in eval mode.
        progress: show a progress bar (status lines when stderr is not a terminal).
        checkpoint: a folder for per-epoch checkpoints; training resumes from it when it
            holds one for the same run. None: no checkpoints.
        on_epoch: called after each epoch (after the checkpoint is written) as
            ``on_epoch(epoch, module, stats)``; returning True stops training.
        base: an already fitted undefended model of ``spec``, for defenses that start from
            one (retraining rounds, detectors); None: the defense fits it when it needs it.
    """

    spec: ModelSpec
    n_classes: int
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    progress: bool = False
    checkpoint: Path | None = None
    on_epoch: OnEpoch | None = None
    base: nn.Module | None = None


@dataclass(frozen=True)
class DefenseResult:
    """What a defense produced.

    Attributes:
        model: the defended classifier (CPU, eval mode), logits (N, K) like any model.
        defense: the registry name.
        params: the hyperparameters used (defaults filled in), eps included.
        seconds: wall time of the defense itself (training, refits, attacks inside it).
        history: one mapping per epoch or round (loss, accuracies, checks).
        info: defense-specific facts (e.g. ``catastrophic_overfitting``, ``best_epoch``,
            the universal perturbation ``v`` of universal training).
        extras: further modules to store beside the model (e.g. a detector).
    """

    model: nn.Module
    defense: str
    params: Mapping[str, Any]
    seconds: float
    history: tuple[Mapping[str, Any], ...] = ()
    info: Mapping[str, Any] = field(default_factory=dict)
    extras: Mapping[str, nn.Module] = field(default_factory=dict)


@dataclass(frozen=True)
class DefenseSpec:
    """Registry entry of a defense.

    Attributes:
        name: registry name.
        fn: ``fn(ctx, x, y, *, eps, **params) -> DefenseResult``.
        families: model families it applies to (None: all).
        kind: ``"training"`` (trains a model of ``ctx.spec`` from scratch) or ``"wrapper"``
            (wraps a fitted model, e.g. a detector in front of it).
        defaults: every hyperparameter with its default.
        doc: first line of the function's docstring.
    """

    name: str
    fn: Callable[..., DefenseResult]
    families: tuple[str, ...] | None
    kind: str
    defaults: Mapping[str, Any]
    doc: str = ""
    rules: Mapping[str, Rule] = field(default_factory=dict)

    def check(self, family: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Validate ``params`` for a model ``family``; return them merged with the defaults.

        Raises:
            ValueError: the family is not supported, a parameter is unknown or a value is
                not allowed; the message lists every problem and what is valid.
        """
        found = self.problems(family, params)
        if found:
            raise ValueError("; ".join(found))
        return {**self.defaults, **params}

    def problems(self, family: str | None, params: Mapping[str, Any]) -> list[str]:
        """Every problem of ``params`` for a model ``family`` (None: any family), without
        running anything; empty when all is well."""
        out = []
        if family is not None and self.families is not None and family not in self.families:
            out.append(f"defense {self.name!r} does not apply to model {family!r}; "
                       f"valid models: {', '.join(self.families)}")
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            out.append(f"unknown parameter(s) {unknown} for defense {self.name!r}; "
                       f"valid: {', '.join(sorted(self.defaults)) or '(none)'}")
        known = {k: v for k, v in params.items() if k in self.defaults}
        return out + problems(known, self.rules, prefix=f"defense {self.name!r}: ")


DEFENSES: Registry[DefenseSpec] = Registry("defense")
TRAIN_OVERRIDE_RULES: dict[str, Rule] = {**TRAIN_RULES,
                                         "schedule": choice(*TRAIN_CHOICES["schedule"])}


def register(name: str, *, families: tuple[str, ...] | None = None, kind: str = "training",
             defaults: Mapping[str, Any] | None = None,
             rules: Mapping[str, Rule] | None = None) -> Callable:
    """Decorator registering a defense function under ``name`` (duplicates raise).

    ``rules`` declares what hyperparameters allow (``robustkit.params``); the others are
    checked against their default's type, and the training overrides (epochs, lr, schedule,
    batch_size) against the model families' training rules.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    defaults = dict(defaults or {})
    over = {k: optional(r) for k, r in TRAIN_OVERRIDE_RULES.items() if k in defaults}

    def deco(fn: Callable[..., DefenseResult]) -> Callable[..., DefenseResult]:
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        DEFENSES.add(name, DefenseSpec(name, fn, families, kind, defaults, doc,
                                       rules_from(defaults, {**over, **(rules or {})})))
        return fn

    return deco


def check_eps(eps: Any) -> float:
    """``eps`` as a float; ValueError unless it is a number in (0, 1]."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps <= 1:
        raise ValueError(f"eps must be a number in (0, 1] (inputs live in [0, 1]), got {eps!r}")
    return float(eps)


# Training settings a defense may override on top of the model's own (None: keep).
TRAIN_OVERRIDES = ("epochs", "lr", "schedule", "batch_size")


def with_training(ctx: DefenseContext, params: Mapping[str, Any]) -> DefenseContext:
    """``ctx`` with the model's training settings overridden by the non-None values of
    ``params[k]`` for k in ``TRAIN_OVERRIDES`` (validated by ``models.create``)."""
    from dataclasses import replace

    from robustkit.models import create

    over = {k: params[k] for k in TRAIN_OVERRIDES if params.get(k) is not None}
    if not over:
        return ctx
    return replace(ctx, spec=create(ctx.spec.family, **{**ctx.spec.params, **over}))


def step_seed(seed: int, step: int) -> int:
    """A per-step seed: perturbations depend on (seed, step) only, so resumed runs repeat
    them exactly."""
    return (int(seed) * 1_000_003 + int(step)) % (2**62)


def descend(opt: torch.optim.Optimizer, params: Sequence[torch.Tensor],
            loss: torch.Tensor) -> None:
    """One optimizer step on ``loss``, its gradients taken with ``torch.autograd.grad`` so that
    only ``params`` get a ``.grad`` (the caller clears them when training ends)."""
    grads = torch.autograd.grad(loss, params)
    for p, g in zip(params, grads):
        p.grad = g
    opt.step()
