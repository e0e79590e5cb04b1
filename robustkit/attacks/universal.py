"""Universal adversarial perturbations: one v (the shape of one input) for all inputs.

``uap`` here (Moosavi-Dezfooli et al. 2017, Algorithm 1 with a DeepFool inner step,
batched); ``uap_sgd`` in ``universal_sgd.py`` (projected sign-SGD, Shafahi et al. 2020),
re-exported here; what both share lives in ``universal_common.py``.
Fooling rate, as in the UAP paper: the fraction of inputs whose prediction on
``clamp(x + v, 0, 1)`` differs from the prediction on x (labels play no part);
the misclassification rate (prediction != y) is reported separately.

Registry names (kind ``"universal"``, eps = the radius xi, ``info["v"]`` = v):
``uap`` (Linf), ``uap_l2``, ``uap_sgd`` (Linf), ``uap_sgd_l2``.
"""
from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from robustkit.attacks.base import eval_mode, generator, project
from robustkit.attacks.deepfool import check_params, deepfool_from
from robustkit.attacks.universal_common import (
    SHARED_RULES,
    UAPResult,
    check_count,
    check_plateau,
    check_universal,
    fooling_rate,
    pass_record,
    plateaued,
    predict,
    register_fit,
    summarize,
)
from robustkit.attacks.universal_sgd import uap_sgd
from robustkit.params import integer, number


def uap(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, xi: float, norm: str = "linf",
        delta: float = 0.2, max_passes: int = 10, batch_size: int = 32,
        overshoot: float = 0.02, deepfool_iter: int = 10, candidates: int = 10,
        probe_size: int = 2048, x_val: torch.Tensor | None = None, seed: int = 0,
        patience: int | None = 3, min_gain: float = 0.005) -> UAPResult:
    """Fit a universal perturbation by accumulating DeepFool steps (UAP, Algorithm 1).

    Each pass visits x in a seeded random order. Algorithm 1 takes one sample at a time:
    if ``clamp(x_i + v)`` is still predicted as the clean prediction of x_i, DeepFool (L2,
    ``deepfool_iter`` steps, from ``clamp(x_i + v)``) finds the minimal extra ``dv_i``
    that changes it, and ``v <- P_xi(v + dv_i)``, the projection onto the ``norm`` ball of
    radius xi. As in the authors' code, dv_i is only folded in when DeepFool succeeded.
    Passes stop once the fooling rate on x reaches 1 - delta, or after ``max_passes``,
    or (a deviation from the paper, which runs until 1 - delta) once the last ``patience``
    passes together raised the fooling rate on x by at most ``min_gain`` (the rate before
    the first pass, 0, counts as pass 0). Without it, a model the xi ball cannot fool to
    1 - delta (an adversarially trained one) spends all ``max_passes`` passes without
    moving the rate: on an FGSM-trained MNIST CNN at Linf 0.3 (2,000 images), 10 passes
    took 175 s of CPU time and raised it from 0.50% to 0.55%; the stop ends the fit after
    3 passes (53 s). On plain digits MLP/CNN (Linf 0.1-0.3) and MNIST CNN (0.1, 0.2)
    fits, the passes after the stop raised the fooling rate by at most 0.6 points on x
    and 0.9 held out; with patience 2 the MNIST CNN at 0.2 would have stopped 7.9
    held-out points short.
    ``batch_size=1`` with ``patience=None`` runs exactly this.

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
        patience: passes the fooling-rate gain is measured over for the plateau stop
            (None: no plateau stop, as in the paper).
        min_gain: the plateau stop's threshold, a fooling rate in [0, 1].

    Returns:
        ``UAPResult``; its history entries add ``accepted``, the fraction of mini-batch
        updates kept by the acceptance test (1.0 when ``batch_size=1``); ``plateau``
        says whether the plateau stop ended the fit.

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
    check_count("deepfool_iter", deepfool_iter, 1)
    check_params(norm="l2", overshoot=overshoot, max_iter=deepfool_iter, candidates=candidates)
    check_count("max_passes", max_passes, 0)
    check_count("probe_size", probe_size, 1)
    check_plateau(patience, min_gain)
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
        rates, stalled = [rate], False
        while len(history) < max_passes and rate < 1 - delta and xi > 0 and not stalled:
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
            rates.append(rate)
            stalled = plateaued(rates, patience, min_gain)
            history.append(pass_record(model, len(history) + 1, rate, v, x_val, t0,
                                       accepted=kept / tried if tried else 1.0))
        return summarize(model, x, y, v, clean, history, delta=delta, x_val=x_val, t0=t0,
                         plateau=stalled)


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


RULES = {**SHARED_RULES, "max_passes": integer(0), "overshoot": number(0),
         "deepfool_iter": integer(1), "candidates": integer(2), "probe_size": integer(1),
         "patience": integer(1, none=True), "min_gain": number(0, 1)}
register_fit("uap", uap, "linf", RULES)
register_fit("uap_l2", uap, "l2", RULES)

__all__ = ["UAPResult", "fooling_rate", "uap", "uap_sgd"]
