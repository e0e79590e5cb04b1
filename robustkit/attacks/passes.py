"""Model passes an attack makes: the machine-independent measure of its work.

An image counts once per forward pass it goes through (``forward_images``) and once per
backward pass that takes an input gradient through it (``backward_images``), as adv-lib's
AttackBench counts. ``counting(model)`` counts every pass of a block with hooks on the
model (removed at exit; the model is otherwise untouched), and ``counted(fn)`` wraps an
attack so that its result's ``info`` carries the counts of its call (the registry wraps
every registered attack this way):

- ``forward_images`` / ``backward_images``: totals over the call, every pass included
  (input checks, the attack's own passes, the prediction on x_adv);
- ``forward_passes`` / ``backward_passes``: the totals divided by the number of samples
  attacked (``len(x)``), floats.

FGSM on a robustkit model (which knows its class count, so the input checks make no
pass) counts 2 forward passes and 1 backward pass per sample: the gradient pass and the
prediction on x_adv. A batched backward pass (``is_grads_batched``, k gradient rows per
image) reaches the input hook once; the code that runs one calls :func:`add_backward` for
the other k - 1 rows per image, so that k rows count as k backward passes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

_ACTIVE: weakref.WeakKeyDictionary[nn.Module, list[PassCount]] = weakref.WeakKeyDictionary()


@dataclasses.dataclass(eq=False)
class PassCount:
    """Images through forward passes and through input-gradient backward passes."""

    forward_images: int = 0
    backward_images: int = 0

    def info(self, n: int) -> dict[str, float | int]:
        """The counts as ``info`` entries for an attack on ``n`` samples."""
        per = max(n, 1)
        return {"forward_images": self.forward_images,
                "backward_images": self.backward_images,
                "forward_passes": self.forward_images / per,
                "backward_passes": self.backward_images / per}


@contextlib.contextmanager
def counting(model: nn.Module) -> Iterator[PassCount]:
    """Count the passes through ``model`` inside the block (nested blocks count too, each
    its own). Passes from other threads through the same model count as well.

    Example:
        >>> model = torch.nn.Linear(4, 3)
        >>> with counting(model) as c:
        ...     _ = model(torch.rand(5, 4))
        >>> (c.forward_images, c.backward_images)
        (5, 0)
    """
    count = PassCount()
    if not isinstance(model, nn.Module):
        yield count
        return
    counters = _ACTIVE.setdefault(model, [])
    counters.append(count)
    handle = model.register_forward_pre_hook(_pre_hook) if len(counters) == 1 else None
    try:
        yield count
    finally:
        counters.remove(count)
        if handle is not None:
            handle.remove()
        if not counters:
            _ACTIVE.pop(model, None)


def add_backward(model: nn.Module, images: int) -> None:
    """Count ``images`` backward images that the input hook cannot see (the extra rows of a
    batched backward pass) in every active count of ``model``."""
    for count in _ACTIVE.get(model, ()):
        count.backward_images += images


def _pre_hook(model: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    counters = _ACTIVE.get(model, [])
    x = args[0] if args else None
    if not torch.is_tensor(x):
        return None
    for count in counters:
        count.forward_images += len(x)
    if not (x.requires_grad and torch.is_grad_enabled()):
        return None
    x = x.view_as(x)  # a node of its own: its hook fires once per backward through it

    def backward(grad: torch.Tensor) -> None:
        for count in counters:
            count.backward_images += len(grad)

    x.register_hook(backward)
    return (x, *args[1:])


def counted(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn(model, x, y, ...)`` returning an AttackResult, with the pass counts of the call
    added to the result's ``info`` (see the module docstring)."""

    @functools.wraps(fn)
    def wrapper(model: nn.Module, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        with counting(model) as count:
            res = fn(model, x, *args, **kwargs)
        info = getattr(res, "info", None)
        if isinstance(info, dict) and torch.is_tensor(x):
            info.update(count.info(len(x)))
        return res

    return wrapper
