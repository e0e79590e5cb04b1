"""What the universal-perturbation fits share: the result type, the fooling rate, the
per-pass record, the final summary, argument checks and the registry wrapper.

``universal.py`` (``uap``, DeepFool-based) and ``universal_sgd.py`` (``uap_sgd``) both
build on this module and on nothing of each other's (``universal`` re-exports
``uap_sgd``), so the import graph has no cycle.
"""
from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robustkit.attacks.base import (
    NORMS,
    AttackResult,
    check_inputs,
    eval_mode,
    make_result,
    register,
)
from robustkit.params import Rule, integer, number, rules_from


@dataclass(frozen=True)
class UAPResult:
    """What fitting a universal perturbation produced.

    Attributes:
        v: the perturbation, shape of one input, device/dtype of x, inside the xi ball.
        fooling_rate: on the fitting data, prediction on clamp(x + v) != prediction on x.
        misclassification_rate: on the fitting data, prediction on clamp(x + v) != y.
        fooling_rate_val: fooling rate on ``x_val`` when given, else None.
        history: one dict per pass (epoch): ``pass``, ``fooling_rate``, ``seconds`` (since
            the start), ``l2`` and ``linf`` of v, plus ``fooling_rate_val`` / ``target_rate``
            when they apply.
        converged: whether the target rate 1 - delta was reached (fooling rate, or the
            rate of predicting ``target`` for a targeted perturbation).
        passes: passes (epochs) run.
        seconds: wall time of the fit.
        target_rate: fraction predicted as ``target`` on clamp(x + v) (targeted only).
        plateau: whether the fit stopped early because the fooling rate stopped rising
            (``uap``'s ``patience``/``min_gain``); False when it ran its passes out or
            reached 1 - delta.
    """

    v: torch.Tensor
    fooling_rate: float
    misclassification_rate: float
    fooling_rate_val: float | None
    history: list[dict[str, Any]]
    converged: bool
    passes: int
    seconds: float
    target_rate: float | None = None
    plateau: bool = False


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 4096) -> torch.Tensor:
    """Predicted labels (N,) on x's device, in batches (the model already in eval mode)."""
    out = [model(x[s:s + batch_size]).argmax(1) for s in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long, device=x.device)


def fooling_rate(model: nn.Module, x: torch.Tensor, v: torch.Tensor, clean: torch.Tensor
                 ) -> float:
    """Fraction of x whose prediction on clamp(x + v, 0, 1) differs from ``clean``, the
    clean predictions (N,) (the UAP paper's fooling rate; labels play no part)."""
    if len(x) == 0:
        return 0.0
    with eval_mode(model):
        return float((predict(model, (x + v).clamp(0, 1)) != clean).float().mean())


def pass_record(model: nn.Module, n: int, rate: float, v: torch.Tensor,
                x_val: torch.Tensor | None, t0: float, **extra: Any) -> dict[str, Any]:
    """The history entry of pass ``n``."""
    rec: dict[str, Any] = {"pass": n, "fooling_rate": rate,
                           "seconds": time.perf_counter() - t0,
                           "l2": float(v.norm()), "linf": float(v.abs().max()), **extra}
    if x_val is not None:
        rec["fooling_rate_val"] = fooling_rate(model, x_val, v, predict(model, x_val))
    return rec


def summarize(model: nn.Module, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor,
              clean: torch.Tensor, history: list[dict[str, Any]], *, delta: float,
              x_val: torch.Tensor | None, t0: float, target: int | None = None,
              plateau: bool = False) -> UAPResult:
    """Measure the final v on x (and x_val) and build the ``UAPResult``."""
    pred = predict(model, (x + v).clamp(0, 1))
    fool = float((pred != clean).float().mean()) if len(x) else 0.0
    misc = float((pred != y).float().mean()) if len(x) else 0.0
    val = fooling_rate(model, x_val, v, predict(model, x_val)) if x_val is not None else None
    hit = float((pred == target).float().mean()) if target is not None else None
    reached = (hit if hit is not None else fool) >= 1 - delta
    return UAPResult(v.detach(), fool, misc, val, history, reached, len(history),
                     time.perf_counter() - t0, hit, plateau and not reached)


def check_radius(*, xi: float, norm: str, delta: float) -> None:
    """Validate a universal perturbation's radius, norm and target 1 - delta."""
    if isinstance(xi, bool) or not isinstance(xi, (int, float)) or not xi >= 0:
        raise ValueError(f"xi must be a number >= 0, got {xi!r}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 <= delta <= 1:
        raise ValueError(f"delta must be a number in [0, 1], got {delta!r}")


def check_universal(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, xi: float,
                    norm: str, delta: float, batch_size: int,
                    x_val: torch.Tensor | None) -> None:
    """Validate the arguments shared by the universal perturbations."""
    check_inputs(model, x, y)
    check_radius(xi=xi, norm=norm, delta=delta)
    check_count("batch_size", batch_size, 1)
    if len(x) == 0:
        raise ValueError("x is empty: a universal perturbation needs data to fit on")
    if x_val is not None:
        if not torch.is_tensor(x_val) or x_val.shape[1:] != x.shape[1:]:
            raise ValueError(f"x_val must be a tensor of inputs shaped like x's "
                             f"{tuple(x.shape[1:])}, got "
                             f"{tuple(x_val.shape) if torch.is_tensor(x_val) else x_val!r}")
        check_inputs(model, x_val, torch.zeros(len(x_val), dtype=torch.long, device=x_val.device))


def check_count(name: str, value: int, low: int) -> None:
    """ValueError naming ``name`` unless ``value`` is an int (not a bool) >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def check_plateau(patience: int | None, min_gain: float) -> None:
    """Validate the plateau stop's ``patience`` (None or an int >= 1) and ``min_gain``
    (a number in [0, 1])."""
    if patience is not None:
        check_count("patience", patience, 1)
    if (isinstance(min_gain, bool) or not isinstance(min_gain, (int, float))
            or not 0 <= min_gain <= 1):
        raise ValueError(f"min_gain must be a number in [0, 1], got {min_gain!r}")


def plateaued(rates: list[float], patience: int | None, min_gain: float) -> bool:
    """Whether the last ``patience`` passes together raised the fooling rate by at most
    ``min_gain``: ``rates`` holds the rate before the first pass, then one per pass."""
    return (patience is not None and len(rates) > patience
            and rates[-1] - rates[-1 - patience] <= min_gain)


def register_fit(name: str, fit: Callable[..., UAPResult], norm: str,
                 rules: Mapping[str, Rule]) -> None:
    """Register ``fit`` with a fixed norm as a registry attack: v fitted with xi = eps on
    x (or on ``fit_x``/``fit_y``), applied to x; ``info`` holds ``v`` and the ``UAPResult``.
    ``rules`` declares what ``fit``'s parameters allow beyond their defaults' types."""

    def attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
               fit_x: torch.Tensor | None = None, fit_y: torch.Tensor | None = None,
               seed: int = 0, **params: Any) -> AttackResult:
        if (fit_x is None) != (fit_y is None):
            raise ValueError("fit_x and fit_y must be given together")
        check_inputs(model, x, y, eps=eps)
        fx, fy = (x, y) if fit_x is None or fit_y is None else (fit_x, fit_y)
        res = fit(model, fx, fy, xi=eps, norm=norm, seed=seed, **params)
        x_adv = (x + res.v.to(x)).clamp(0, 1)
        return make_result(model, x, x_adv, y, iterations=res.passes,
                           info={"v": res.v, "uap": res, "fooling_rate": res.fooling_rate,
                                 "passes": res.passes, "plateau": res.plateau})

    attack.__name__ = attack.__qualname__ = name
    attack.__doc__ = (f"Fit a universal {norm} perturbation ({fit.__name__}, xi = eps) and "
                      f"add it to every input.\n\nSee :func:`{fit.__name__}`.")
    defaults = {p.name: p.default for p in inspect.signature(fit).parameters.values()
                if p.kind is p.KEYWORD_ONLY and p.name not in ("xi", "norm", "seed")}
    register(name, norm=norm, kind="universal", rules={
        **rules_from(defaults, rules), "x_val": lambda v: None})(attack)


# The arguments both universal fits share.
SHARED_RULES: dict[str, Rule] = {"delta": number(0, 1), "batch_size": integer(1)}
