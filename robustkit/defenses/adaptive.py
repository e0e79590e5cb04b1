"""Adaptive attacks: attacks that know the detector and the rectifier they face.

A detector that only stops attacks unaware of it is no defense (Carlini & Wagner 2017,
"Adversarial examples are not easily detected"; Athalye et al. 2018). Both attacks here
optimize against the whole :class:`~robustkit.defenses.system.DefendedSystem`:

- :func:`adaptive_pgd`: PGD on min(margin(model(x')), kappa) - lambda * relu(detector(x')
  - threshold + 1), one run per lambda, keeping per sample the first iterate that gets
  through the system; with a rectifier also a run that fools both model(x') and
  model(R(x')), so the system errs whichever path the detector picks.
- :func:`adaptive_uap`: one universal v by sign-SGD on the same objectives over
  mini-batches (Shafahi et al.'s SGD UAP with a detector penalty), plus ``uap_sgd``
  against model and against model(R(.)); the v that lowers the system's accuracy most
  on the data it was fitted on wins.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robustkit.attacks.base import AttackResult, check_inputs, generator, make_result, project
from robustkit.attacks.fgsm import ascent_direction, random_delta
from robustkit.attacks.pgd import margin_loss
from robustkit.attacks.universal import uap_sgd
from robustkit.defenses.system import REJECT, DefendedSystem, decide_from, system_accuracy

Objective = tuple[float, str]  # (lambda, "evade" | "both" | "rect" | "plain")


def objectives(system: DefendedSystem, lambdas: Sequence[float]) -> list[Objective]:
    """The objectives worth running against this kind of system."""
    if system.detector is None:
        return [(0.0, "rect" if system.rectifier is not None else "plain")]
    runs: list[Objective] = [(float(lam), "evade") for lam in lambdas]
    if system.rectifier is not None:
        runs.append((0.0, "both"))
    return runs


def _loss(system: DefendedSystem, x: torch.Tensor, y: torch.Tensor, obj: Objective,
          kappa: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample objective to ascend, the system's decisions and detector logits."""
    direct, rect, det = system.paths(x)
    lam, mode = obj
    value = margin_loss(direct, y).clamp(max=kappa)
    if mode in ("rect", "both") and rect is not None:
        m_rect = margin_loss(rect, y).clamp(max=kappa)
        value = m_rect if mode == "rect" else value + m_rect
    elif mode == "evade" and det is not None:
        value = value - lam * torch.relu(det - system.threshold + 1.0)
    dec = decide_from(direct.detach(), None if rect is None else rect.detach(),
                      None if det is None else det.detach(), threshold=system.threshold)
    score = det.detach() if det is not None else torch.zeros(len(x), device=x.device)
    return value, dec, score


def adaptive_pgd(system: DefendedSystem, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                 norm: str = "linf", steps: int = 50, step_size: float | None = None,
                 lambdas: Sequence[float] = (0.1, 1.0, 10.0), kappa: float = 5.0,
                 random_start: bool = False, seed: int = 0) -> AttackResult:
    """PGD against a defended system: fool the classifier while evading the detector.

    Args:
        system: the classifier with its detector and/or rectifier (none is changed).
        x: inputs (N, ...) in [0, 1]; y: int64 (N,) labels.
        eps: budget in ``norm`` (``"linf"`` or ``"l2"``); steps: iterations per run.
        step_size: default 2.5 * eps / steps.
        lambdas: detector-penalty weights, one run each (see :func:`objectives`).
        kappa: margins are clamped at kappa, so a fooled sample spends its steps on
            evading the detector.
        random_start: start at a random point of the ball instead of at x. Off by
            default: a random start of radius eps already looks perturbed to a detector
            (measured on MNIST at eps 0.3: starting at x evades far more often).

    Returns:
        AttackResult; ``success`` = the system's decision is wrong and not a rejection,
        ``pred`` = the system's decisions (-1 = rejected), ``info["detector_logit"]``.

    Example:
        >>> r = adaptive_pgd(system, x, y, eps=0.1)  # doctest: +SKIP

    Reference: Carlini & Wagner, "Adversarial Examples Are Not Easily Detected: Bypassing
    Ten Detection Methods", AISec 2017 (arXiv:1705.07263); Madry et al., ICLR 2018.
    """
    check_inputs(system.model, x, y, eps=eps)
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    size = step_size if step_size is not None else 2.5 * eps / steps
    gen = generator(seed, x.device)
    x = x.detach()
    best_x, best_ok = x.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device)
    best_dec = torch.full_like(y, REJECT)
    best_score = torch.full((len(x),), float("inf"), device=x.device)
    shape = (-1, *[1] * (x.dim() - 1))
    with system._eval():
        for obj in objectives(system, lambdas):
            delta = random_delta(x, eps, norm, gen) if random_start else torch.zeros_like(x)
            for t in range(steps + 1):
                xd = (x + delta).detach().requires_grad_(True)
                value, dec, score = _loss(system, xd, y, obj, kappa)
                ok = (dec != y) & (dec != REJECT)
                # A success beats a failure; among successes (and among final failures)
                # the lower detector logit wins, so the AUC is scored on the best evasion.
                take = ok & (~best_ok | (score < best_score))
                if t == steps:
                    take |= ~best_ok & ~ok & (score < best_score)
                best_x = torch.where(take.view(shape), xd.detach(), best_x)
                best_dec = torch.where(take, dec, best_dec)
                best_score = torch.where(take, score, best_score)
                best_ok |= ok
                if t == steps:
                    break
                (grad,) = torch.autograd.grad(value.sum(), xd)
                delta = project(delta + size * ascent_direction(grad, norm), eps, norm)
                delta = (x + delta).clamp(0, 1) - x
    res = make_result(system.model, x, best_x, y, iterations=steps, pred=best_dec,
                      info={"detector_logit": best_score.cpu(),
                            "objectives": objectives(system, lambdas)})
    return dataclasses.replace(res, success=best_ok)


@dataclass(frozen=True)
class AdaptiveUAP:
    """An adaptive universal perturbation.

    Attributes:
        v: the perturbation (shape of one input), within the xi ball.
        system_accuracy: the system's accuracy on the fitting data perturbed by v
            (rejections count as defended).
        method: which candidate won (``"uap_sgd"``, ``"uap_sgd:rectified"``,
            ``"sgd:evade:<lambda>"``, ``"sgd:both"``...).
        candidates: every candidate's system accuracy on the fitting data.
    """

    v: torch.Tensor
    system_accuracy: float
    method: str
    candidates: Mapping[str, float]


def adaptive_uap(system: DefendedSystem, x: torch.Tensor, y: torch.Tensor, *, xi: float,
                 norm: str = "linf", epochs: int = 10, batch_size: int = 64,
                 step_size: float | None = None, lambdas: Sequence[float] = (0.1, 1.0, 10.0),
                 kappa: float = 5.0, seed: int = 0,
                 uap_params: Mapping[str, Any] | None = None) -> AdaptiveUAP:
    """A universal perturbation against the whole system (classifier + rectifier +
    detector), chosen among several candidates by the system accuracy it leaves on x.

    Args:
        system: the defended system (nothing in it is changed).
        x, y: fitting inputs (N, ...) in [0, 1] and int64 labels (score on other data).
        xi: radius of v in ``norm``; epochs, batch_size, step_size (default xi / 10):
            of the penalized sign-SGD runs.
        lambdas, kappa: as in :func:`adaptive_pgd`.
        uap_params: further keyword arguments of ``uap_sgd`` for its candidates.

    Returns:
        :class:`AdaptiveUAP`.

    Example:
        >>> r = adaptive_uap(system, x_train, y_train, xi=0.3)  # doctest: +SKIP
        >>> system.decide((x_test + r.v).clamp(0, 1))  # doctest: +SKIP

    Reference: Shafahi et al., "Universal Adversarial Training", AAAI 2020
    (arXiv:1812.03705); Akhtar, Liu & Mian, CVPR 2018 (the defended pipeline).
    """
    check_inputs(system.model, x, y, eps=xi)
    found: dict[str, torch.Tensor] = {}
    kw = dict(uap_params or {})
    size = step_size if step_size is not None else xi / 10
    with system._eval():  # a new Sequential is in train mode: keep it (and ours) in eval
        found["uap_sgd"] = uap_sgd(system.model, x, y, xi=xi, norm=norm, seed=seed, **kw).v
        if system.rectifier is not None:
            chained = nn.Sequential(system.rectifier, system.model).eval()
            found["uap_sgd:rectified"] = uap_sgd(chained, x, y, xi=xi, norm=norm, seed=seed,
                                                 **kw).v
        for obj in objectives(system, lambdas):
            name = f"sgd:{obj[1]}" + (f":{obj[0]:g}" if obj[1] == "evade" else "")
            found[name] = _sgd_uap(system, x, y, obj, xi=xi, norm=norm, epochs=epochs,
                                   batch_size=batch_size, size=size, kappa=kappa, seed=seed)
    accs = {k: system_accuracy(system.decide((x + v.to(x)).clamp(0, 1)), y, adversarial=True)
            for k, v in found.items()}
    best = min(accs, key=lambda k: accs[k])
    return AdaptiveUAP(found[best].detach().reshape(x.shape[1:]), accs[best], best, accs)


def _sgd_uap(system: DefendedSystem, x: torch.Tensor, y: torch.Tensor, obj: Objective, *,
             xi: float, norm: str, epochs: int, batch_size: int, size: float, kappa: float,
             seed: int) -> torch.Tensor:
    # Sign-SGD with a fixed step oscillates: keep the epoch's v that leaves the system
    # the lowest accuracy on x (the last one on ties), as uap_sgd keeps its best epoch.
    gen = generator(seed, "cpu")
    v = torch.zeros((1, *x.shape[1:]), device=x.device, dtype=x.dtype)
    best, best_acc = v, float("inf")
    with system._eval():
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=gen).to(x.device)
            for i in range(0, len(x), batch_size):
                idx = order[i:i + batch_size]
                v.requires_grad_(True)
                value, _, _ = _loss(system, (x[idx] + v).clamp(0, 1), y[idx], obj, kappa)
                (grad,) = torch.autograd.grad(value.mean(), v)
                v = project(v.detach() + size * ascent_direction(grad, norm), xi, norm)
            acc = system_accuracy(system.decide((x + v).clamp(0, 1)), y, adversarial=True)
            if acc <= best_acc:
                best, best_acc = v, acc
    return best[0]
