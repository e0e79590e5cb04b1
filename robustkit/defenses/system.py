"""A classifier with a detector and/or a rectifier in front, scored as one system.

Decision rule (Akhtar et al.'s pipeline): the detector flags an input when its logit
exceeds its threshold; a flagged input is classified after rectification when there is a
rectifier, and rejected (label -1) when there is none. Without a detector, a rectifier
rectifies every input. Scoring: under attack a rejected input counts as defended
(correct); on clean inputs a rejection counts as an error.
"""
from __future__ import annotations

import os
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustkit.attacks.base import eval_mode
from robustkit.defenses.detector import Detector, build_detector
from robustkit.defenses.rectifier import Rectifier, build_rectifier
from robustkit.models.registry import accuracy

REJECT = -1


class DefendedSystem:
    """``model`` behind an optional ``detector`` and ``rectifier``.

    If the detector carries its own rectifier (the PRN variant, which detects on
    x - R(x)) and ``rectifier`` is not given, that rectifier is used for classification.

    Example:
        >>> system = DefendedSystem(model, detector=det)  # doctest: +SKIP
        >>> system.decide(x)  # labels, -1 where rejected  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, detector: Detector | None = None,
                 rectifier: Rectifier | None = None) -> None:
        if detector is not None and not isinstance(detector, Detector):
            raise TypeError(f"detector must be a Detector, got {type(detector).__name__}")
        if rectifier is None and detector is not None:
            rectifier = detector.rectifier
        self.model, self.detector, self.rectifier = model, detector, rectifier

    @property
    def threshold(self) -> float:
        return float(self.detector.threshold) if self.detector is not None else float("inf")

    def paths(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None,
                                              torch.Tensor | None]:
        """Differentiable ``(model(x), model(R(x)) or None, detector logit or None)``."""
        rect = self.model(self.rectifier(x)) if self.rectifier is not None else None
        det = self.detector(x) if self.detector is not None else None
        return self.model(x), rect, det

    @torch.no_grad()
    def score(self, x: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
        """Detector logits (N,) on CPU (higher = more likely perturbed)."""
        if self.detector is None:
            raise ValueError("this system has no detector to score with")
        with eval_mode(self.detector):
            return torch.cat([self.detector(x[i:i + batch_size]).cpu()
                              for i in range(0, len(x), batch_size)])

    @torch.no_grad()
    def decide(self, x: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
        """Labels (N,) int64 on CPU: the system's decision, -1 for a rejected input."""
        out = []
        with self._eval():
            for i in range(0, len(x), batch_size):
                out.append(decide_from(*self.paths(x[i:i + batch_size]),
                                       threshold=self.threshold).cpu())
        return torch.cat(out) if out else torch.empty(0, dtype=torch.long)

    def _eval(self) -> ExitStack:
        """A context keeping model, detector and rectifier in eval mode (restored after)."""
        stack = ExitStack()
        for m in (self.model, self.detector, self.rectifier):
            if m is not None:
                stack.enter_context(eval_mode(m))
        return stack


def decide_from(direct: torch.Tensor, rect: torch.Tensor | None, det: torch.Tensor | None,
                *, threshold: float) -> torch.Tensor:
    """The decision rule on precomputed outputs (see the module docstring)."""
    if det is None:
        return (rect if rect is not None else direct).argmax(1)
    flagged = det > threshold
    alt = rect.argmax(1) if rect is not None else torch.full_like(flagged, REJECT,
                                                                   dtype=torch.long)
    return torch.where(flagged, alt, direct.argmax(1))


def system_accuracy(decisions: torch.Tensor, y: torch.Tensor, *, adversarial: bool) -> float:
    """Accuracy of system decisions: a rejection (-1) is correct on adversarial inputs
    and an error on clean inputs.

    Example:
        >>> d, y = torch.tensor([0, -1, 2, -1]), torch.tensor([0, 1, 1, 1])
        >>> system_accuracy(d, y, adversarial=True), system_accuracy(d, y, adversarial=False)
        (0.75, 0.25)
    """
    if decisions.shape != y.shape:
        raise ValueError(f"decisions {tuple(decisions.shape)} and y {tuple(y.shape)} differ")
    ok = decisions.cpu() == y.cpu()
    if adversarial:
        ok |= decisions.cpu() == REJECT
    return float(ok.float().mean()) if len(ok) else float("nan")


def save_system(system: DefendedSystem, directory: str | os.PathLike, **meta: Any) -> Path:
    """Store the detector and the rectifier (not the model) as named store groups."""
    from robustkit import store

    if system.detector is not None:
        store.save(system.detector, directory, family="detector", name="detector", **meta)
    if system.rectifier is not None and (system.detector is None
                                         or system.rectifier is not system.detector.rectifier):
        store.save(system.rectifier, directory, family="rectifier", name="rectifier", **meta)
    return Path(directory)


def load_system(directory: str | os.PathLike, model: nn.Module, *,
                device: str | torch.device = "cpu") -> DefendedSystem:
    """Rebuild the detector/rectifier groups :func:`save_system` wrote, around ``model``."""
    from robustkit import store

    d = Path(directory)
    det = store.load(d, name="detector", build=build_detector, device=device)[0] \
        if (d / "detector.json").is_file() else None
    rect = store.load(d, name="rectifier", build=build_rectifier, device=device)[0] \
        if (d / "rectifier.json").is_file() else None
    return DefendedSystem(model, det, rect)  # type: ignore[arg-type]


SCORE_ATTACKS = ("fgsm", "pgd", "uap", "noise")


def detection_scores(model: nn.Module, defense: Detector | DefendedSystem, x: torch.Tensor,
                     y: torch.Tensor, *, attacks: tuple[str, ...] = ("fgsm", "uap", "noise"),
                     eps: tuple[float, ...] = (0.1, 0.2, 0.3), adaptive: bool | str = True,
                     fit_x: torch.Tensor | None = None, fit_y: torch.Tensor | None = None,
                     norm: str = "linf", steps: int = 50,
                     lambdas: tuple[float, ...] = (0.1, 1.0, 10.0),
                     uap_params: dict[str, Any] | None = None, seed: int = 0) -> list[dict]:
    """Score a detector (or a whole defended system) per attack and eps, non-adaptive and
    adaptive.

    Non-adaptive attacks target the bare classifier: ``fgsm`` (``fgm`` for L2), ``pgd``
    (``steps`` steps), ``uap`` (``uap_sgd`` fitted on ``fit_x``, radius eps, seed
    ``seed``; a detector trained with the same ``seed`` used UAPs of seeds seed + 1...),
    ``noise``. Adaptive ones know the system: ``fgsm``/``pgd`` -> :func:`adaptive_pgd`
    at the same eps (one adaptive row for the pair when both are asked for, under
    ``pgd``), ``uap`` -> :func:`adaptive_uap` fitted on ``fit_x``; noise has no
    adaptive row. AUC and ROC compare the detector logits of x and of the perturbed x
    (every perturbed input is a positive, fooling or not).

    Args:
        model: the classifier; defense: its :class:`Detector` or a :class:`DefendedSystem`.
        x, y: evaluation inputs (N, ...) in [0, 1] and int64 labels.
        adaptive: True: non-adaptive and adaptive rows; False: non-adaptive only;
            ``"only"``: adaptive rows only.
        fit_x, fit_y: data the universal perturbations are fitted on (default x, y).
        uap_params: keyword arguments of ``uap_sgd``; its ``epochs`` also sets the epochs
            of the adaptive UAP's own sign-SGD runs.

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
    from robustkit.defenses.adaptive import attack_system

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
                                              seed=seed)
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
    import numpy as np
    from sklearn.metrics import roc_auc_score, roc_curve

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
