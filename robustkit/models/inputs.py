"""The one input check every model family runs at the top of ``forward``.

A model knows the shape of one input (``arch["input_shape"]``); a batch of another shape
raises a ValueError naming both shapes, instead of a matrix-size error from deep inside
torch. Families that flatten their inputs (linear, mlp, svm, gmm) also take any shape with
the same number of features per sample, e.g. (N, 64) for 8x8 images.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from robustkit.params import Rule, integer, integers, problems


def check_input(x: torch.Tensor, input_shape: Sequence[int], family: str, *,
                flat_ok: bool = True) -> None:
    """Raise ValueError/TypeError unless x is a floating (N, *input_shape) tensor (or, with
    ``flat_ok``, any (N, ...) tensor with ``prod(input_shape)`` features per sample)."""
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise TypeError(f"model {family!r}: x must be a floating-point tensor, got "
                        f"{x.dtype if torch.is_tensor(x) else type(x).__name__}")
    shape = tuple(x.shape[1:])
    if shape == tuple(input_shape) and x.dim() > 0:
        return
    if flat_ok and x.dim() > 1 and math.prod(shape) == math.prod(input_shape):
        return
    expected = "(" + ", ".join(str(s) for s in input_shape) + ("," if len(input_shape) == 1
                                                                 else "") + ")"
    also = f" or {math.prod(input_shape)} features" if flat_ok and len(input_shape) > 1 else ""
    got = f"inputs of shape {shape}" if x.dim() > 1 else f"x of shape {tuple(x.shape)}"
    raise ValueError(f"model {family!r} expects each input of shape {expected}{also}, got "
                     f"{got}")


def check_arch(family: str, values: Mapping[str, Any], rules: Mapping[str, Rule]) -> None:
    """Raise ValueError listing every constructor argument its rule rejects: a module is
    also rebuilt from the stored ``arch`` of a file, which may have been edited."""
    found = problems(values, rules, prefix=f"model {family!r}: ")
    if found:
        raise ValueError("; ".join(found))


# The arguments every family's module takes.
SHAPE_RULES: dict[str, Rule] = {"input_shape": integers(1, min_length=1),
                                "n_classes": integer(2)}
