"""The data contract checked at every attack's boundary: x, y, eps, target, and the class
count of the model."""
from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import nn

from robustkit.attacks.model_calls import n_classes


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
