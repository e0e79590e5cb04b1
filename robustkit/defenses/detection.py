"""Scoring a detector or a defended system per attack and radius: detection ROC, system
accuracy (a rejection under attack counts as defended), non-adaptive and adaptive attacks.
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn

from robustkit.attacks.autoattack import autoattack
from robustkit.attacks.fgsm import fgm, fgsm
from robustkit.attacks.noise import noise
from robustkit.attacks.pgd import pgd
from robustkit.attacks.universal import uap_sgd
from robustkit.defenses.adaptive import adaptive_pgd, adaptive_uap
from robustkit.defenses.adaptive_autoattack import adaptive_autoattack
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
    ``noise``. Adaptive ones know the system: ``fgsm``/``pgd`` -> :func:`~robustkit.defenses.adaptive.adaptive_pgd`
    at the same eps (one adaptive row for the pair when both are asked for, under
    ``pgd``), ``uap`` -> :func:`~robustkit.defenses.adaptive.adaptive_uap` fitted on ``fit_x``, ``autoattack`` ->
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


def attack_system(system: DefendedSystem, attack: str, eps: float, x: torch.Tensor,
                  y: torch.Tensor, *, adaptive: bool, fit_x: torch.Tensor, fit_y: torch.Tensor,
                  norm: str = "linf", steps: int = 50,
                  lambdas: Sequence[float] = (0.1, 1.0, 10.0),
                  uap_params: Mapping[str, Any] | None = None,
                  autoattack_params: Mapping[str, Any] | None = None,
                  seed: int = 0) -> tuple[torch.Tensor, str]:
    """Perturb x with ``attack`` at ``eps``: against the bare classifier, or adaptively.

    Non-adaptive: ``fgsm`` (``fgm`` for L2), ``pgd``, ``uap`` (``uap_sgd`` on fit_x),
    ``noise``, ``autoattack`` (with ``autoattack_params``). Adaptive: ``uap`` ->
    :func:`~robustkit.defenses.adaptive.adaptive_uap` on fit_x, ``autoattack`` -> ``adaptive_autoattack`` (the chain
    against the system's decision), any other -> :func:`~robustkit.defenses.adaptive.adaptive_pgd`. Returns
    ``(x_adv, method)``, method naming what ran.

    Example:
        >>> x_adv, method = attack_system(system, "uap", 0.3, x, y, adaptive=True,
        ...                               fit_x=x_fit, fit_y=y_fit)  # doctest: +SKIP
    """
    model, kw = system.model, dict(uap_params or {})
    if attack == "uap":
        if adaptive:
            res = adaptive_uap(system, fit_x, fit_y, xi=eps, norm=norm, lambdas=lambdas,
                               epochs=int(kw.get("epochs", 10)), uap_params=kw, seed=seed)
            v, method = res.v, f"adaptive_uap[{res.method}]"
        else:
            v = uap_sgd(model, fit_x, fit_y, xi=eps, norm=norm, seed=seed, **kw).v
            method = "uap_sgd"
        return (x + v.to(x).reshape(x.shape[1:])).clamp(0, 1), method
    if attack == "autoattack":
        aa = dict(autoattack_params or {})
        if adaptive:
            x_adv, info = adaptive_autoattack(system, x, y, eps=eps, norm=norm, seed=seed,
                                              **aa)
            return x_adv, f"adaptive_autoattack[{_tally(info['counts'])}]"
        res = autoattack(model, x, y, eps=eps, norm=norm, seed=seed, **aa)
        return res.x_adv, f"autoattack[{_tally(res.info['counts'])}]"
    if adaptive:
        r = adaptive_pgd(system, x, y, eps=eps, norm=norm, steps=steps, lambdas=lambdas,
                         seed=seed)
        return r.x_adv, f"adaptive_pgd[{steps} steps, lambdas={list(lambdas)}]"
    if attack == "fgsm":
        return (fgsm if norm == "linf" else fgm)(model, x, y, eps=eps).x_adv, "fgsm"
    if attack == "pgd":
        return pgd(model, x, y, eps=eps, norm=norm, steps=steps, seed=seed).x_adv, "pgd"
    if attack == "noise":
        return noise(model, x, y, eps=eps, norm=norm, seed=seed).x_adv, "noise"
    raise ValueError(f"attack must be 'fgsm', 'pgd', 'uap', 'noise' or 'autoattack', "
                     f"got {attack!r}")


def _tally(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k}:{v}" for k, v in counts.items())
