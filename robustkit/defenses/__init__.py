"""Defenses: adversarial training, retraining, detectors -- plain functions and a registry.

``defend(name, model, x, y, eps=...)`` runs one; ``names()`` lists them, ``get(name)``
returns the ``DefenseSpec`` (``.fn``, ``.families``, ``.defaults``). Scoring lives in
``robustkit.defenses.score``.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustkit.defenses.base import (
    DEFENSES,
    DefenseContext,
    DefenseResult,
    DefenseSpec,
    check_eps,
    register,
)

# Modules whose import registers defenses. The detector family is optional: its modules
# join the registry when present.
_MODULES = ("adversarial", "universal", "retrain", "certified")
_OPTIONAL = ("wrappers",)


def _load() -> None:
    for mod in _MODULES:
        importlib.import_module(f"robustkit.defenses.{mod}")
    for mod in _OPTIONAL:
        try:
            importlib.import_module(f"robustkit.defenses.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"robustkit.defenses.{mod}":
                raise


def names() -> list[str]:
    """Registered defense names."""
    _load()
    return DEFENSES.names()


def get(name: str) -> DefenseSpec:
    """The registry entry of defense ``name`` (ValueError listing valid names if unknown)."""
    _load()
    return DEFENSES.get(name)


def defend(
    name: str,
    model: str,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    model_params: dict[str, Any] | None = None,
    n_classes: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
    checkpoint: str | Path | None = None,
    on_epoch: Any = None,
    base: nn.Module | None = None,
    **params: Any,
) -> DefenseResult:
    """Train (or wrap) a model of family ``model`` with defense ``name`` at budget ``eps``.

    Args:
        name: a defense from :func:`names`.
        model: a model family (``robustkit.models.names()``).
        x: (N, ...) float training inputs in [0, 1]; y: (N,) int64 labels.
        eps: the Linf budget the defense trains against, in (0, 1].
        model_params: family parameters (epochs, lr, ...), validated by ``models.create``.
        n_classes: K (default ``y.max() + 1``).
        seed: seeds everything inside the defense.
        device: ``"cpu"``, ``"cuda"``, ``"auto"``.
        checkpoint: folder for per-epoch checkpoints; an interrupted run resumes from it.
        on_epoch: optional ``on_epoch(epoch, module, stats)`` after each epoch's checkpoint.
        base: an already fitted undefended model (used by retraining and detectors).
        **params: the defense's hyperparameters (see ``get(name).defaults``).

    Returns:
        A :class:`DefenseResult`; ``.model`` is the defended classifier.

    Example:
        >>> from robustkit import load_dataset
        >>> x, y, _ = load_dataset("digits")
        >>> res = defend("fgsm_rs", "linear", x, y, eps=0.05, model_params={"epochs": 2})
        >>> res.model(x[:2]).shape
        torch.Size([2, 10])
    """
    from robustkit import models

    spec_d = get(name)
    spec = models.create(model, **(model_params or {}))
    merged = spec_d.check(model, params)
    merged["eps"] = check_eps(eps)
    _check_data(x, y)
    k = int(n_classes) if n_classes is not None else int(y.max()) + 1
    if int(y.min()) < 0 or int(y.max()) >= k:
        raise ValueError(f"y must hold class indices in [0, {k}) (n_classes={k}), got values "
                         f"in [{int(y.min())}, {int(y.max())}]")
    ctx = DefenseContext(
        spec=spec, n_classes=k, seed=int(seed), device=models.resolve_device(device),
        progress=progress, checkpoint=Path(checkpoint) if checkpoint is not None else None,
        on_epoch=on_epoch, base=base,
    )
    eps_v = merged.pop("eps")
    return spec_d.fn(ctx, x, y, eps=eps_v, **merged)


def _check_data(x: torch.Tensor, y: torch.Tensor) -> None:
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {type(x).__name__}")
    if len(x) == 0 or not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise ValueError("x must be a non-empty tensor of finite values in [0, 1]")
    if not torch.is_tensor(y) or y.dtype != torch.int64 or y.dim() != 1 or len(y) != len(x):
        raise ValueError(f"y must be an int64 tensor of shape ({len(x)},)")


__all__ = ["DefenseContext", "DefenseResult", "DefenseSpec", "defend", "get", "names",
           "register"]
