"""What :func:`robustkit.evaluate.evaluate` checks before any work, and its device helpers:
eps values, data against the contract and the model, the canonical device, a clock."""
from __future__ import annotations

import inspect
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from robustkit.attacks import AttackSpec, get


def resolve_attack(attack: str | AttackSpec) -> AttackSpec:
    """The registry entry of ``attack`` (a name or an ``AttackSpec``), checked to be one of
    the kinds evaluation drives."""
    spec = get(attack) if isinstance(attack, str) else attack
    if not isinstance(spec, AttackSpec):
        raise TypeError(f"attack must be a name or an AttackSpec, got {type(attack).__name__}")
    if spec.kind not in ("fixed", "minimal", "universal"):
        raise ValueError(f"attack {spec.name!r} has unknown kind {spec.kind!r}")
    return spec


def with_version(rows: list[dict[str, Any]], spec: AttackSpec, params: Mapping[str, Any]
                 ) -> list[dict[str, Any]]:
    """``rows`` with ``version`` added where the attack comes in versions (AutoAttack's
    standard, fast, rand, lean): the version that produced each number."""
    default = inspect.signature(spec.fn).parameters.get("version")
    if default is None:
        return rows
    version = str(params.get("version", default.default))
    return [{**r, "version": version} for r in rows]


def check_eps(eps: float | Sequence[float]) -> list[float]:
    """``eps`` as a non-empty list of finite floats >= 0."""
    values = [eps] if isinstance(eps, (int, float)) else list(eps)
    if not values:
        raise ValueError("eps must be a number or a non-empty list of numbers")
    for e in values:
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not 0 <= e < math.inf:
            raise ValueError(f"eps must be finite numbers >= 0, got {e!r}")
    return [float(e) for e in values]


def check_data(model: nn.Module, x: torch.Tensor, y: torch.Tensor, xname: str, yname: str,
               dev: torch.device, n_classes: int | None = None) -> int:
    """Validate x, y against the data contract and the model; return its class count."""
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise TypeError(f"{xname} must be a floating-point tensor, got {type(x).__name__}")
    if not torch.is_tensor(y) or y.dtype != torch.int64 or y.dim() != 1:
        raise TypeError(f"{yname} must be an int64 tensor of shape (N,)")
    if len(x) != len(y):
        raise ValueError(f"len({xname})={len(x)} != len({yname})={len(y)}")
    if len(x) == 0:
        raise ValueError(f"{xname} is empty")
    if not torch.isfinite(x).all():
        raise ValueError(f"{xname} contains NaN or inf")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise ValueError(f"{xname} must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    out = _probe(model, x[:2].to(dev))
    if out.dim() != 2 or out.shape[0] != min(2, len(x)):
        raise ValueError(f"model must return logits of shape (N, n_classes); for "
                         f"{min(2, len(x))} inputs it returned shape {tuple(out.shape)}")
    k = out.shape[1] if n_classes is None else n_classes
    return check_labels(y, k, yname)


def check_labels(y: torch.Tensor, k: int, yname: str = "y") -> int:
    """``k`` if every label of ``y`` is in [0, k), else a ValueError."""
    if int(y.min()) < 0 or int(y.max()) >= k:
        raise ValueError(f"{yname} must hold labels in [0, {k}) (the model's classes), got "
                         f"range [{int(y.min())}, {int(y.max())}]")
    return k


def _probe(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:
        raise ValueError(f"model failed on inputs of shape {tuple(x.shape)}: {exc}") from exc
    if not torch.is_tensor(out):
        raise ValueError(f"model must return a tensor of logits, got {type(out).__name__}")
    return out


def check_batch_size(batch_size: int, name: str = "batch_size") -> int:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {batch_size!r}")
    return batch_size


def canonical(dev: torch.device) -> torch.device:
    """``cuda`` as ``cuda:<current index>``, so that two names of one device compare equal."""
    if dev.type == "cuda" and dev.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return dev


def clock(dev: torch.device) -> float:
    """``time.perf_counter`` after the device's queued work (CUDA) is done."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return time.perf_counter()
