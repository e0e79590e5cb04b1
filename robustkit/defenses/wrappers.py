"""The detector-like defenses of the registry: ``detector`` (reject flagged inputs) and
``prn`` (rectify and classify them), Akhtar et al.'s pipeline. Both wrap a fitted model;
``robustkit.defenses.system`` scores the result as one system.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from robustkit.defenses.base import DefenseContext, DefenseResult, register
from robustkit.defenses.detector import fit_detector
from robustkit.defenses.pool import uap_pool
from robustkit.defenses.rectifier import fit_rectifier
from robustkit.params import choice, integer, number

# What the detector-like defenses (detector, prn) share.
WRAPPER_RULES = {"eps_low": number(0, 1, open_low=True), "norm": choice("linf", "l2"),
                 "n_uaps": integer(1), "n_synthetic": integer(0), "epochs": integer(1),
                 "holdout": number(0, 1, open_low=True, open_high=True),
                 "fpr": number(0, 1, open_low=True, open_high=True),
                 "uap_epochs": integer(0, none=True)}


def on_device(ctx: DefenseContext, x: torch.Tensor, y: torch.Tensor) -> tuple[nn.Module, float]:
    """The undefended model to wrap (``ctx.base`` or a fresh fit) on ``ctx.device``, and
    the seconds a fresh fit took; ``ctx.base`` itself is never moved."""
    t0 = time.perf_counter()
    base = ctx.base
    if base is None:
        base = ctx.spec.fit(x, y, n_classes=ctx.n_classes, seed=ctx.seed, device=ctx.device)
    fit_seconds = time.perf_counter() - t0 if ctx.base is None else 0.0
    if ctx.device.type != "cpu":
        base = copy.deepcopy(base).to(ctx.device)
    return base, fit_seconds


@register("detector", kind="wrapper", defaults={
    "features": "dct", "positives": ("uap", "fgsm"), "negatives": ("clean",),
    "eps_low": 1 / 3, "norm": "linf", "n_uaps": 4, "n_synthetic": 8, "epochs": 20,
    "holdout": 0.2, "fpr": 0.05, "uap_epochs": None}, rules=WRAPPER_RULES)
def detector_defense(ctx: DefenseContext, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                     eps_low: float, uap_epochs: int | None, **params: Any) -> DefenseResult:
    """Put a clean-vs-perturbed detector (rejecting flagged inputs) in front of a model.

    The detector trains on perturbations with radii in [eps_low * eps, eps]; see
    :func:`fit_detector` for the other parameters. ``extras["detector"]`` holds it; score
    it with ``robustkit.defenses.detection.detection_scores``. It does not make the model
    itself any more robust: an attacker who evades the detector meets the bare model.

    Example:
        >>> res = defend("detector", "cnn", x, y, eps=0.3)  # doctest: +SKIP

    Reference: Akhtar, Liu & Mian, CVPR 2018 (arXiv:1711.05929).
    """
    base, fit_seconds = on_device(ctx, x, y)
    t0 = time.perf_counter()
    det = fit_detector(base, x, y, eps=(eps * eps_low, eps), seed=ctx.seed,
                       uap_params=_uap_params(uap_epochs), **params)
    return DefenseResult(
        model=base.cpu().eval(), defense="detector",
        params={**params, "eps": eps, "eps_low": eps_low, "uap_epochs": uap_epochs},
        seconds=time.perf_counter() - t0,
        info={"threshold": float(det.threshold), "base_fit_seconds": fit_seconds},
        extras={"detector": det.cpu().eval()})


def _uap_params(uap_epochs: int | None) -> dict[str, Any]:
    return {} if uap_epochs is None else {"epochs": int(uap_epochs)}


# 16 real UAPs (not 4): the PRN generalizes to unseen UAPs from the variety of real ones.
# Measured on digits (cnn, xi 0.3, benchmarks/defenses_detector.py's scoring): system
# accuracy under a fresh UAP 0.21 with 4 real + 8 synthetic, 0.46 with 16 + 16.
@register("prn", kind="wrapper", defaults={
    "features": "dct", "positives": ("uap",), "eps_low": 1 / 3, "norm": "linf",
    "n_uaps": 16, "n_synthetic": 16, "epochs": 10, "width": 32, "blocks": 2, "beta": 1.0,
    "clean_fraction": 0.25,
    "detector_epochs": 20, "holdout": 0.2, "fpr": 0.05, "uap_epochs": None}, rules={
    **WRAPPER_RULES, "width": integer(1), "blocks": integer(0), "beta": number(0),
    "clean_fraction": number(0, 1, open_high=True), "detector_epochs": integer(1)})
def prn_defense(ctx: DefenseContext, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                eps_low: float, features: str, positives: Sequence[str], norm: str,
                n_uaps: int, n_synthetic: int, epochs: int, width: int, blocks: int, beta: float,
                clean_fraction: float, detector_epochs: int, holdout: float,
                fpr: float, uap_epochs: int | None) -> DefenseResult:
    """Akhtar et al.'s pipeline: a PRN plus a detector on the DCT of x - PRN(x); flagged
    inputs are classified after rectification.

    Both train on one pool of universal perturbations (radii in [eps_low * eps, eps])
    computed against the model. ``extras["detector"]`` holds the detector with the PRN
    inside it (``detector.rectifier``). It does not stop perturbations the detector
    misses, nor an attacker who differentiates through PRN and detector.

    Example:
        >>> res = defend("prn", "cnn", x, y, eps=0.3)  # doctest: +SKIP

    Reference: Akhtar, Liu & Mian, CVPR 2018 (arXiv:1711.05929).
    """
    base, fit_seconds = on_device(ctx, x, y)
    t0 = time.perf_counter()
    xi = (eps * eps_low, eps)
    pool = uap_pool(base, x, y, xi=xi, norm=norm, n_uaps=n_uaps, n_synthetic=n_synthetic,
                    seed=ctx.seed,
                    uap_params={} if uap_epochs is None else {"epochs": int(uap_epochs)})
    prn = fit_rectifier(base, x, y, pool=pool, beta=beta, clean_fraction=clean_fraction,
                        width=width, blocks=blocks, epochs=epochs, seed=ctx.seed)
    det = fit_detector(base, x, y, features=features, positives=positives, eps=xi,
                       norm=norm, pool=pool, rectifier=prn, epochs=detector_epochs,
                       holdout=holdout, fpr=fpr, seed=ctx.seed)
    params = {"features": features, "positives": tuple(positives), "eps": eps,
              "eps_low": eps_low, "norm": norm, "n_uaps": n_uaps, "n_synthetic": n_synthetic,
              "epochs": epochs, "width": width, "blocks": blocks, "beta": beta,
              "clean_fraction": clean_fraction,
              "detector_epochs": detector_epochs, "holdout": holdout, "fpr": fpr,
              "uap_epochs": uap_epochs}
    return DefenseResult(
        model=base.cpu().eval(), defense="prn", params=params,
        seconds=time.perf_counter() - t0,
        info={"threshold": float(det.threshold), "pool_size": len(pool),
              "base_fit_seconds": fit_seconds},
        extras={"detector": det.cpu().eval()})
