"""Adversarial retraining for models not trained by gradient descent (kernel SVM, GMM).

Rounds of: attack the current model on the training set, add the adversarial examples
(with their true labels) to the pool, refit a fresh model on clean + pool. The fit is the
family's own (libsvm, EM), so the defense works for any family, at the cost of one refit
per round.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from typing import Any

import torch

from robustkit.defenses.base import DefenseContext, DefenseResult, register, step_seed
from robustkit.params import integer, positive


@register("retrain", families=None, defaults={
    "rounds": 2, "attack": "fgsm", "attack_params": {}, "ratio": 1.0, "accumulate": True},
    rules={"rounds": integer(1), "ratio": positive(), "attack": lambda v: _fixed_attack(v),
           "attack_params": lambda v: None if isinstance(v, dict) else "a table of parameters"})
def retrain(ctx: DefenseContext, x: torch.Tensor, y: torch.Tensor, *, eps: float,
            rounds: int, attack: str, attack_params: Mapping[str, Any], ratio: float,
            accumulate: bool) -> DefenseResult:
    """Refit on clean plus adversarial training examples, over several rounds.

    Meant for the families without gradient training (``svm``, ``gmm``); it works for
    every family since it only needs the family's own fit.

    Each round attacks the current model with ``attack`` at ``eps`` on a seeded subset of
    ``ratio * N`` training samples (all of them, and repeats beyond, for ratio >= 1 in
    whole passes), then refits a fresh model of ``ctx.spec`` on the clean set plus the
    adversarial pool (this round's examples only with ``accumulate=False``).

    Args:
        ctx: model family and parameters, seed, device; ``ctx.base`` (optional) is the
            undefended starting model, else it is fitted here first.
        x: (N, ...) training inputs in [0, 1]; y: (N,) int64 labels.
        eps: attack budget used for the adversarial examples.
        rounds: number of attack-and-refit rounds (>= 1).
        attack: any registered fixed-budget attack (``"fgsm"``, ``"pgd"``...).
        attack_params: extra keyword arguments of the attack.
        ratio: adversarial examples per clean example and round (> 0).
        accumulate: keep the adversarial examples of earlier rounds in the pool.

    Returns:
        DefenseResult; ``history`` has per round the training accuracy under the attack
        before refitting, the pool size and the fit time.

    Example:
        >>> from robustkit import load_dataset
        >>> from robustkit.defenses import defend
        >>> x, y, _ = load_dataset("digits")
        >>> res = defend("retrain", "linear", x, y, eps=0.1, rounds=1,
        ...              model_params={"epochs": 3})
        >>> res.history[0]["n_fit"] == 2 * len(y)
        True

    Reference: Goodfellow, Shlens & Szegedy, ICLR 2015 (adversarial training by
    augmentation); for SVMs, cf. Biggio & Roli, "Wild patterns", Pattern Recognition 2018.
    Defends only against the attack and eps it was trained with, as far as that attack
    finds adversarial examples for the refitted model.
    """
    from robustkit import attacks
    from robustkit.models.registry import accuracy

    _check(rounds, ratio)
    spec_a = attacks.get(attack)
    if spec_a.kind != "fixed":
        raise ValueError(f"attack must be a fixed-budget attack, got {attack!r} "
                         f"(kind {spec_a.kind!r})")
    t0 = time.perf_counter()
    model = ctx.base if ctx.base is not None else _fit(ctx, x, y)
    pool_x: list[torch.Tensor] = []
    pool_y: list[torch.Tensor] = []
    history = []
    gen = torch.Generator().manual_seed(ctx.seed)
    n_adv = max(1, round(ratio * len(x)))
    for r in range(rounds):
        t_round = time.perf_counter()
        idx = torch.cat([torch.randperm(len(x), generator=gen)
                         for _ in range(-(-n_adv // len(x)))])[:n_adv]
        x_adv = _attack(spec_a.fn, model, x[idx], y[idx], eps, dict(attack_params),
                        step_seed(ctx.seed, r), ctx.device)
        robust = float((_pred(model, x_adv) == y[idx]).float().mean())
        if not accumulate:
            pool_x.clear()
            pool_y.clear()
        pool_x.append(x_adv)
        pool_y.append(y[idx])
        x_fit = torch.cat([x, *pool_x])
        y_fit = torch.cat([y, *pool_y])
        model = _fit(ctx, x_fit, y_fit)
        history.append({"round": r, "attacked_accuracy": robust, "n_fit": len(y_fit),
                        "train_accuracy": accuracy(model, x, y),
                        "seconds": time.perf_counter() - t_round})
    params = {"eps": eps, "rounds": rounds, "attack": attack,
              "attack_params": dict(attack_params), "ratio": ratio, "accumulate": accumulate}
    return DefenseResult(model, "retrain", params, time.perf_counter() - t0, tuple(history),
                         {"n_adversarial": sum(len(p) for p in pool_y)})


def _fit(ctx: DefenseContext, x: torch.Tensor, y: torch.Tensor) -> torch.nn.Module:
    return ctx.spec.fit(x, y, n_classes=ctx.n_classes, seed=ctx.seed, device=ctx.device,
                        progress=ctx.progress)


def _attack(fn: Any, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
            params: dict[str, Any], seed: int, device: torch.device,
            batch_size: int = 1024) -> torch.Tensor:
    from robustkit.models.registry import model_device

    if model_device(model) != device:
        model = copy.deepcopy(model).to(device)
    out = []
    for s in range(0, len(x), batch_size):
        xb, yb = x[s:s + batch_size].to(device), y[s:s + batch_size].to(device)
        out.append(fn(model, xb, yb, eps=eps, seed=seed + s, **params).x_adv.cpu())
    return torch.cat(out)


@torch.no_grad()
def _pred(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    from robustkit.models.registry import predict

    return predict(model, x)


def _check(rounds: Any, ratio: Any) -> None:
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 0:
        raise ValueError(f"ratio must be a number > 0, got {ratio!r}")


def _fixed_attack(name: Any) -> str | None:
    """The ``attack`` rule: the name of a registered fixed-budget attack."""
    from robustkit import attacks

    fixed = [n for n in attacks.names() if attacks.get(n).kind == "fixed"]
    return None if name in fixed else f"a fixed-budget attack, one of {fixed}"
