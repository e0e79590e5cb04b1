"""Universal adversarial perturbations: one v (the shape of one input) for all inputs.

``uap`` here (Moosavi-Dezfooli et al. 2017, Algorithm 1 with a DeepFool inner step,
batched); ``uap_sgd`` in ``universal_sgd.py`` (projected sign-SGD, Shafahi et al. 2020).
Fooling rate, as in the UAP paper: the fraction of inputs whose prediction on
``clamp(x + v, 0, 1)`` differs from the prediction on x (labels play no part);
the misclassification rate (prediction != y) is reported separately.

Registry names (kind ``"universal"``, eps = the radius xi, ``info["v"]`` = v):
``uap`` (Linf), ``uap_l2``, ``uap_sgd`` (Linf), ``uap_sgd_l2``.
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
    generator,
    make_result,
    project,
    register,
)
from robustkit.attacks.deepfool import check_params, deepfool_from
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


def uap(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, xi: float, norm: str = "linf",
        delta: float = 0.2, max_passes: int = 10, batch_size: int = 32,
        overshoot: float = 0.02, deepfool_iter: int = 10, candidates: int = 10,
        probe_size: int = 2048, x_val: torch.Tensor | None = None, seed: int = 0
        ) -> UAPResult:
    """Fit a universal perturbation by accumulating DeepFool steps (UAP, Algorithm 1).

    Each pass visits x in a seeded random order. Algorithm 1 takes one sample at a time:
    if ``clamp(x_i + v)`` is still predicted as the clean prediction of x_i, DeepFool (L2,
    ``deepfool_iter`` steps, from ``clamp(x_i + v)``) finds the minimal extra ``dv_i``
    that changes it, and ``v <- P_xi(v + dv_i)``, the projection onto the ``norm`` ball of
    radius xi. As in the authors' code, dv_i is only folded in when DeepFool succeeded.
    Passes stop once the fooling rate on x reaches 1 - delta, or after ``max_passes``.
    ``batch_size=1`` runs exactly this.

    Batched (``batch_size > 1``), two deviations: (1) the samples of a mini-batch that v
    does not fool yet run DeepFool in parallel, all from the same v (the one at the start
    of the mini-batch); their updates are folded in one at a time, in the shuffled order,
    each followed by the projection, as in the sequential algorithm, but each dv_i was
    computed against a v without the updates of the samples before it, and a sample that
    those earlier updates fool still contributes. (2) The mini-batch's new v is kept only
    if the fooling rate on a probe set (x, or a seeded subset of ``probe_size`` samples)
    does not drop; otherwise v stays as it was. Without (2) the accumulated updates make
    v oscillate from pass to pass (on the digits MLP at Linf 0.3: between 12% and 88%,
    also with ``batch_size=1``); with it the fooling rate on the probe never decreases.

    Args:
        model: classifier returning logits (N, K); left untouched.
        x: fitting inputs (N, ...) in [0, 1].
        y: labels (N,) int64 (only for the misclassification rate).
        xi: radius of the ``norm`` ball v lives in.
        norm: ``"linf"`` or ``"l2"``.
        delta: target fooling rate is 1 - delta.
        max_passes: maximum passes over x.
        batch_size: samples per parallel DeepFool call (1 = the paper's algorithm).
        overshoot, deepfool_iter, candidates: the inner DeepFool's parameters.
        probe_size: samples of x the batched acceptance test measures on.
        x_val: held-out inputs (M, ...) for ``fooling_rate_val``.
        seed: seeds the visiting order (and the probe subset).

    Returns:
        ``UAPResult``; its history entries add ``accepted``, the fraction of mini-batch
        updates kept by the acceptance test (1.0 when ``batch_size=1``).

    Example:
        >>> from robustkit import load_dataset, models
        >>> tr, te = load_dataset("digits", "train"), load_dataset("digits", "test")
        >>> model, _ = models.train("mlp", "digits", hidden=(64,), epochs=10)
        >>> uap(model, tr.x, tr.y, xi=0.3, x_val=te.x).fooling_rate_val > 0.8
        True

    Reference: Moosavi-Dezfooli, Fawzi, Fawzi & Frossard, "Universal adversarial
    perturbations", CVPR 2017 (arXiv:1610.08401).
    """
    check_universal(model, x, y, xi=xi, norm=norm, delta=delta, batch_size=batch_size,
                    x_val=x_val)
    _check_count("deepfool_iter", deepfool_iter, 1)
    check_params(norm="l2", overshoot=overshoot, max_iter=deepfool_iter, candidates=candidates)
    _check_count("max_passes", max_passes, 0)
    _check_count("probe_size", probe_size, 1)
    t0 = time.perf_counter()
    gen = generator(seed, "cpu")
    v = torch.zeros_like(x[0])
    history: list[dict[str, Any]] = []
    with eval_mode(model):
        clean = predict(model, x)
        keep = None if len(x) <= probe_size else torch.randperm(len(x), generator=gen)[
            :probe_size].to(x.device)
        px, pc = (x, clean) if keep is None else (x[keep], clean[keep])
        rate, probe_rate = fooling_rate(model, x, v, clean), 0.0
        while len(history) < max_passes and rate < 1 - delta and xi > 0:
            order = torch.randperm(len(x), generator=gen).to(x.device)
            tried = kept = 0
            for s in range(0, len(x), batch_size):
                idx = order[s:s + batch_size]
                new = _fold(model, x[idx], clean[idx], v, xi=xi, norm=norm,
                            overshoot=overshoot, max_iter=deepfool_iter, candidates=candidates)
                if new is None:
                    continue
                tried += 1
                if batch_size == 1:
                    v, kept = new, kept + 1
                    continue
                new_rate = fooling_rate(model, px, new, pc)
                if new_rate >= probe_rate:
                    v, probe_rate, kept = new, new_rate, kept + 1
            rate = fooling_rate(model, x, v, clean)
            history.append(pass_record(model, len(history) + 1, rate, v, x_val, t0,
                                       accepted=kept / tried if tried else 1.0))
        return summarize(model, x, y, v, clean, history, delta=delta, x_val=x_val, t0=t0)


def _fold(model: nn.Module, x: torch.Tensor, clean: torch.Tensor, v: torch.Tensor, *,
          xi: float, norm: str, overshoot: float, max_iter: int, candidates: int
          ) -> torch.Tensor | None:
    """One mini-batch: parallel DeepFool from v on the samples v does not fool, then the
    sequential fold ``v <- P(v + dv_i)`` of the successful updates (None: no update)."""
    start = (x + v).clamp(0, 1)
    with torch.no_grad():
        todo = model(start).argmax(1) == clean
    if not todo.any():
        return None
    start, lab = start[todo], clean[todo]
    x_adv, _, pred, _ = deepfool_from(model, start, lab, norm="l2", overshoot=overshoot,
                                      max_iter=max_iter, candidates=candidates)
    done = pred != lab
    if not done.any():
        return None
    for dv in (x_adv - start)[done]:
        v = project((v + dv)[None], xi, norm)[0]
    return v


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
              x_val: torch.Tensor | None, t0: float, target: int | None = None) -> UAPResult:
    """Measure the final v on x (and x_val) and build the ``UAPResult``."""
    pred = predict(model, (x + v).clamp(0, 1))
    fool = float((pred != clean).float().mean()) if len(x) else 0.0
    misc = float((pred != y).float().mean()) if len(x) else 0.0
    val = fooling_rate(model, x_val, v, predict(model, x_val)) if x_val is not None else None
    hit = float((pred == target).float().mean()) if target is not None else None
    reached = (hit if hit is not None else fool) >= 1 - delta
    return UAPResult(v.detach(), fool, misc, val, history, reached, len(history),
                     time.perf_counter() - t0, hit)


def check_universal(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, xi: float,
                    norm: str, delta: float, batch_size: int,
                    x_val: torch.Tensor | None) -> None:
    """Validate the arguments shared by the universal perturbations."""
    check_inputs(model, x, y)
    if isinstance(xi, bool) or not isinstance(xi, (int, float)) or not xi >= 0:
        raise ValueError(f"xi must be a number >= 0, got {xi!r}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 <= delta <= 1:
        raise ValueError(f"delta must be a number in [0, 1], got {delta!r}")
    _check_count("batch_size", batch_size, 1)
    if len(x) == 0:
        raise ValueError("x is empty: a universal perturbation needs data to fit on")
    if x_val is not None:
        if not torch.is_tensor(x_val) or x_val.shape[1:] != x.shape[1:]:
            raise ValueError(f"x_val must be a tensor of inputs shaped like x's "
                             f"{tuple(x.shape[1:])}, got "
                             f"{tuple(x_val.shape) if torch.is_tensor(x_val) else x_val!r}")
        check_inputs(model, x_val, torch.zeros(len(x_val), dtype=torch.long, device=x_val.device))


def _check_count(name: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def _registered(name: str, fit: Callable[..., UAPResult], norm: str,
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
                           info={"v": res.v, "uap": res, "fooling_rate": res.fooling_rate})

    attack.__name__ = attack.__qualname__ = name
    attack.__doc__ = (f"Fit a universal {norm} perturbation ({fit.__name__}, xi = eps) and "
                      f"add it to every input.\n\nSee :func:`{fit.__name__}`.")
    defaults = {p.name: p.default for p in inspect.signature(fit).parameters.values()
                if p.kind is p.KEYWORD_ONLY and p.name not in ("xi", "norm", "seed")}
    register(name, norm=norm, kind="universal", rules={
        **rules_from(defaults, rules), "x_val": lambda v: None})(attack)


# The arguments both universal fits share.
SHARED_RULES: dict[str, Rule] = {"delta": number(0, 1), "batch_size": integer(1)}
RULES = {**SHARED_RULES, "max_passes": integer(0), "overshoot": number(0),
         "deepfool_iter": integer(1), "candidates": integer(2), "probe_size": integer(1)}
_registered("uap", uap, "linf", RULES)
_registered("uap_l2", uap, "l2", RULES)

# Imported last: universal_sgd builds on the helpers above and registers its own names.
from robustkit.attacks.universal_sgd import uap_sgd

__all__ = ["UAPResult", "fooling_rate", "uap", "uap_sgd"]
