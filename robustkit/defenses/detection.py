"""Scoring a detector or a defended system per attack and radius: detection ROC, system
accuracy (a rejection under attack counts as defended), non-adaptive and adaptive attacks.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn

from robustkit.defenses.adaptive import attack_system
from robustkit.defenses.detector import Detector
from robustkit.defenses.system import REJECT, DefendedSystem, system_accuracy
from robustkit.models.registry import accuracy

SCORE_ATTACKS = ("fgsm", "pgd", "uap", "noise", "autoattack")


def detection_scores(model: nn.Module, defense: Detector | DefendedSystem, x: torch.Tensor,
                     y: torch.Tensor, *, attacks: tuple[str, ...] = ("fgsm", "uap", "noise"),
                     eps: tuple[float, ...] = (0.1, 0.2, 0.3), adaptive: bool | str = True,
                     fit_x: torch.Tensor | None = None, fit_y: torch.Tensor | None = None,
                     norm: str = "linf", steps: int = 50,
                     lambdas: tuple[float, ...] = (0.1, 1.0, 10.0),
                     uap_params: dict[str, Any] | None = None,
                     autoattack_params: dict[str, Any] | None = None,
                     seed: int = 0) -> list[dict]:
    """Score a detector (or a whole defended system) per attack and eps, non-adaptive and
    adaptive.

    Non-adaptive attacks target the bare classifier: ``fgsm`` (``fgm`` for L2), ``pgd``
    (``steps`` steps), ``uap`` (``uap_sgd`` fitted on ``fit_x``, radius eps, seed
    ``seed``; a detector trained with the same ``seed`` used UAPs of seeds seed + 1...),
    ``noise``. Adaptive ones know the system: ``fgsm``/``pgd`` -> :func:`adaptive_pgd`
    at the same eps (one adaptive row for the pair when both are asked for, under
    ``pgd``), ``uap`` -> :func:`adaptive_uap` fitted on ``fit_x``, ``autoattack`` ->
    AutoAttack's chain against the system's decision (``adaptive_autoattack``;
    non-adaptive: AutoAttack on the bare classifier); noise has no adaptive row. AUC and ROC compare the detector logits of x and of the perturbed x
    (every perturbed input is a positive, fooling or not).

    Args:
        model: the classifier; defense: its :class:`Detector` or a :class:`DefendedSystem`.
        x, y: evaluation inputs (N, ...) in [0, 1] and int64 labels.
        adaptive: True: non-adaptive and adaptive rows; False: non-adaptive only;
            ``"only"``: adaptive rows only.
        fit_x, fit_y: data the universal perturbations are fitted on (default x, y).
        uap_params: keyword arguments of ``uap_sgd``; its ``epochs`` also sets the epochs
            of the adaptive UAP's own sign-SGD runs.
        autoattack_params: keyword arguments of AutoAttack (version, steps, targets,
            queries).

    Returns:
        One dict per (attack, eps, adaptive): ``attack, eps, norm, adaptive, method, n,
        auc, tpr_at_5fpr`` (best TPR at FPR <= 5% on this data), ``tpr_at_threshold,
        fpr_at_threshold`` (shares of attacked / clean inputs the detector flags at its
        own threshold), ``rejection_rate, clean_rejection_rate`` (shares the system
        rejects: the flagged ones without a rectifier, none with one, since flagged
        inputs are then rectified and classified), ``system_accuracy`` (rejected
        = defended), ``clean_system_accuracy`` (rejected = error),
        ``classifier_robust_accuracy, classifier_clean_accuracy, seconds`` and
        ``fpr, tpr`` (ROC on a 101-point FPR grid, for plotting).

    Example:
        >>> rows = detection_scores(model, det, x_test, y_test, eps=(0.3,),
        ...                         fit_x=x_train, fit_y=y_train)  # doctest: +SKIP
    """
    system = defense if isinstance(defense, DefendedSystem) else DefendedSystem(model, defense)
    if system.model is not model:
        raise ValueError("defense is a DefendedSystem around another model than `model`")
    if adaptive not in (True, False, "only"):
        raise ValueError(f"adaptive must be True, False or 'only', got {adaptive!r}")
    modes = {True: (False, True), False: (False,), "only": (True,)}[adaptive]
    bad = [a for a in attacks if a not in SCORE_ATTACKS]
    if bad:
        raise ValueError(f"attacks must lie in {SCORE_ATTACKS}, got {bad}")
    fx, fy = (x, y) if fit_x is None else (fit_x, fit_y if fit_y is not None else y)
    clean_dec = system.decide(x)
    base = {"n": len(x), "norm": norm,
            "clean_system_accuracy": system_accuracy(clean_dec, y, adversarial=False),
            "clean_rejection_rate": _rejected(clean_dec),
            "classifier_clean_accuracy": accuracy(model, x, y)}
    clean_scores = system.score(x) if system.detector is not None else None
    rows = []
    for attack in attacks:
        for e in eps:
            # noise has no adaptive version; adaptive fgsm is adaptive_pgd, run once for pgd
            skip = attack == "noise" or (attack == "fgsm" and "pgd" in attacks)
            for adapt in (m for m in modes if not (m and skip)):
                t0 = time.perf_counter()
                x_adv, method = attack_system(system, attack, float(e), x, y, adaptive=adapt,
                                              fit_x=fx, fit_y=fy, norm=norm, steps=steps,
                                              lambdas=lambdas, uap_params=uap_params,
                                              autoattack_params=autoattack_params, seed=seed)
                dec = system.decide(x_adv)
                row = {"attack": attack, "eps": float(e), "adaptive": adapt, "method": method,
                       **base, **_detection(system, clean_scores, x_adv),
                       "rejection_rate": _rejected(dec),
                       "system_accuracy": system_accuracy(dec, y, adversarial=True),
                       "classifier_robust_accuracy": accuracy(model, x_adv, y),
                       "seconds": time.perf_counter() - t0}
                rows.append(row)
    return rows


def _detection(system: DefendedSystem, clean: torch.Tensor | None,
               x_adv: torch.Tensor) -> dict[str, Any]:
    nan = float("nan")
    if clean is None:
        return {"auc": nan, "tpr_at_5fpr": nan, "tpr_at_threshold": nan,
                "fpr_at_threshold": nan, "fpr": [], "tpr": []}
    adv = system.score(x_adv)
    labels = np.r_[np.zeros(len(clean)), np.ones(len(adv))]
    scores = torch.cat([clean, adv]).double().numpy()
    fpr, tpr, _ = roc_curve(labels, scores)
    grid = np.linspace(0, 1, 101)
    return {"auc": float(roc_auc_score(labels, scores)),
            "tpr_at_5fpr": float(tpr[fpr <= 0.05].max()),
            "tpr_at_threshold": float((adv > system.threshold).float().mean()),
            "fpr_at_threshold": float((clean > system.threshold).float().mean()),
            "fpr": grid.round(4).tolist(), "tpr": np.interp(grid, fpr, tpr).round(4).tolist()}


def _rejected(decisions: torch.Tensor) -> float:
    return float((decisions == REJECT).float().mean()) if len(decisions) else float("nan")
