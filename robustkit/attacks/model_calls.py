"""How attacks call the model: in eval mode (restored after), input gradients without
touching the parameters' .grad, and the checks of what the model returns."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


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
