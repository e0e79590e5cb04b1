"""Any foolbox 3 attack as a robustkit attack: ``attacks.get("foolbox:LinfPGD")``.

foolbox is imported lazily (only when such a name is asked for). The bridge wraps the model
in ``foolbox.PyTorchModel(bounds=(0, 1))`` in eval mode, with its parameters frozen for the
call: foolbox takes gradients with ``loss.backward()``, which would otherwise accumulate
into the parameters' ``.grad``. Fixed-epsilon attacks get ``epsilons=eps`` and return the
clipped adversarials; minimization attacks (C&W, DeepFool, ...) get ``epsilons=None`` and
return the unclipped minimal perturbation (evaluation applies eps as a budget afterwards).
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch
from torch import nn

from robustkit.attacks.base import AttackResult, AttackSpec, check_inputs, eval_mode, make_result
from robustkit.models.training import seeded

_P_TO_NORM = {float("inf"): "linf", 2.0: "l2", 1.0: "l1", 0.0: "l0"}
_PREFIX_TO_NORM = (("Linf", "linf"), ("L2", "l2"), ("L1", "l1"), ("L0", "l0"))


def foolbox_spec(name: str) -> AttackSpec:
    """The registry entry for foolbox attack class ``name`` (e.g. ``"LinfPGD"``, ``"FGSM"``,
    ``"L2CarliniWagnerAttack"``).

    Args:
        name: a class (or alias) in ``foolbox.attacks``.

    Returns:
        AttackSpec named ``foolbox:<name>``; kind ``"fixed"`` for fixed-epsilon attacks,
        ``"minimal"`` for minimization attacks; norm from the attack's distance.

    Example:
        >>> spec = foolbox_spec("LinfPGD")
        >>> spec.norm, spec.kind
        ('linf', 'fixed')

    Reference: Rauber et al., "Foolbox Native", JOSS 5(53):2607, 2020.
    """
    fb = _foolbox()
    cls = getattr(fb.attacks, name, None)
    kind = _kind(fb, cls)
    if kind is None:
        valid = sorted(n for n, c in vars(fb.attacks).items() if _kind(fb, c) is not None)
        raise ValueError(f"unknown foolbox attack {name!r} (robustkit runs fixed-epsilon and "
                         f"minimization attacks); valid: {', '.join(valid)}")

    attack_cls = cast(type, cls)  # _kind checked that it is a class

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float | None = None,
            target: torch.Tensor | None = None, seed: int = 0,
            sample_ids: torch.Tensor | None = None, **params: Any) -> AttackResult:
        # foolbox draws from torch's global RNG for the whole batch: per batch, not per
        # sample; seeded by the batch's first sample id, as evaluation did before.
        if sample_ids is not None and len(sample_ids):
            seed = seed + int(sample_ids[0])
        return _run(attack_cls, kind, model, x, y, eps=eps, target=target, seed=seed, **params)

    run.__doc__ = f"foolbox.attacks.{name} through the robustkit bridge."
    norm = _class_norm(attack_cls)
    return AttackSpec(f"foolbox:{name}", run, norm, kind, run.__doc__)


def _run(cls: type, kind: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
         eps: float | None, target: torch.Tensor | None, seed: int, **params: Any
         ) -> AttackResult:
    fb = _foolbox()
    check_inputs(model, x, y, eps=eps, target=target)
    if kind == "fixed" and eps is None:
        raise ValueError(f"eps is required for the fixed-epsilon attack {cls.__name__}")
    _check_device(model, x)
    attack = cls(**params)
    if kind == "fixed" and eps == 0:
        return make_result(model, x, x.clone(), y, target=target,
                           info={"norm": _instance_norm(attack, cls)})
    criterion = (fb.criteria.Misclassification(y) if target is None
                 else fb.criteria.TargetedMisclassification(target))
    with eval_mode(model), _frozen(model), _forked_rng(seed, x.device), \
            warnings.catch_warnings():
        # foolbox warns about things the bridge has already taken care of (train mode).
        warnings.filterwarnings("ignore", message=".*training mode.*")
        fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=x.device)
        raw, clipped, _ = attack(fmodel, x.detach(), criterion,
                                 epsilons=eps if kind == "fixed" else None)
    x_adv = (clipped if kind == "fixed" else raw).detach().clamp(0, 1)
    return make_result(model, x, x_adv, y, target=target,
                       info={"norm": _instance_norm(attack, cls), "foolbox": cls.__name__})


def _kind(fb: Any, cls: Any) -> str | None:
    """``"fixed"``/``"minimal"`` for a foolbox attack class robustkit can drive, else None."""
    if not isinstance(cls, type):
        return None
    if issubclass(cls, fb.attacks.base.FixedEpsilonAttack):
        return "fixed"
    if issubclass(cls, fb.attacks.base.MinimizationAttack):
        return "minimal"
    return None


def _foolbox() -> Any:
    try:
        with warnings.catch_warnings():
            # foolbox 3.3.4 imports scipy.ndimage.filters, deprecated in recent SciPy.
            warnings.simplefilter("ignore", DeprecationWarning)
            import foolbox
    except ImportError as exc:  # pragma: no cover - foolbox is a dependency
        raise ImportError("the foolbox bridge needs foolbox 3: pip install foolbox") from exc
    return foolbox


def _class_norm(cls: type) -> str:
    for c in cls.__mro__:
        dist = vars(c).get("distance")
        if dist is not None and hasattr(dist, "p"):  # a class attribute, not a property
            return _P_TO_NORM.get(float(dist.p), f"l{dist.p}")
    for prefix, norm in _PREFIX_TO_NORM:
        if cls.__name__.startswith(prefix):
            return norm
    return "l2"


def _instance_norm(attack: Any, cls: type) -> str:
    try:
        return _P_TO_NORM.get(float(attack.distance.p), f"l{attack.distance.p}")
    except (AttributeError, ValueError):
        return _class_norm(cls)


def _check_device(model: nn.Module, x: torch.Tensor) -> None:
    from robustkit.models.registry import model_device

    dev = model_device(model)
    if dev.type != x.device.type or (dev.index or 0) != (x.device.index or 0):
        raise ValueError(f"x is on {x.device} but the model on {dev}; move one of them "
                         "(the bridge never moves the model)")


@contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Turn off requires_grad on the parameters for the block, then restore it."""
    flags = [p.requires_grad for p in model.parameters()]
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


@contextmanager
def _forked_rng(seed: int, device: torch.device) -> Iterator[None]:
    """foolbox draws random starts from torch's global RNG: seed it for the block only."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}")
    with seeded(seed, device):
        yield
