"""A rough cost estimate of a sweep for ``--dry-run``, from constants measured on 2 CPU cores.

The numbers are orders of magnitude (measured once on digits on a busy 2-core machine,
scaled linearly by data size, epochs and attack steps), good enough to see whether a spec
takes minutes or hours, not to plan to the second.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from robustkit.sweep.cells import Cell, full_model_params, model_jobs
from robustkit.sweep.spec import NO_DEFENSE

# (train, test) sizes of the full splits, when a spec sets no limit.
SIZES = {"digits": (1347, 450), "mnist": (60000, 10000), "fashion-mnist": (60000, 10000),
         "cifar10": (50000, 10000)}
# Seconds to train a family on 1,000 digits samples for one epoch (svm/gmm: one fit).
TRAIN_PER_1K = {"linear": 0.02, "mlp": 0.08, "cnn": 0.5, "resnet18": 60.0, "svm": 0.6,
                "gmm": 2.0}
# Relative cost of a forward+backward pass per family (mlp = 1).
FAMILY_COST = {"linear": 0.5, "mlp": 1.0, "cnn": 6.0, "resnet18": 200.0, "svm": 4.0,
               "gmm": 3.0}
# Seconds per 1,000 samples and per eps of one gradient step on the mlp, and the fixed
# cost of one attack call (prediction, bookkeeping).
STEP_PER_1K = 0.015
CALL_SECONDS = 0.05
# Attacks run once whatever the number of eps (minimal perturbations).
ONCE = ("deepfool", "deepfool_linf")
# Gradient steps per sample of each attack (universal: passes over the fit set).
ATTACK_STEPS = {"fgsm": 1, "fgm": 1, "noise": 0.5, "patch": 0.5, "deepfool": 30,
                "deepfool_linf": 30, "uap": 100, "uap_sgd": 40}
# AutoAttack: the share of samples guessed to survive APGD-CE (the rest stop early), the
# cost of one Square query relative to a gradient step (a forward alone), and lean's share of
# the standard chain's passes (0.24-0.29 of its backward passes on the digits benchmark rows).
AA_SURVIVE = 0.5
AA_QUERY = 1 / 3
AA_LEAN = 0.3
# Training cost multiplier of each defense over plain training.
DEFENSE_COST = {"fgsm_rs": 2.0, "pgd": 8.0, "universal": 1.5, "retrain": 4.0,
                "detector": 2.0, "rectifier": 4.0, "ibp": 2.0}


def _sizes(cell: Cell) -> tuple[int, int]:
    full = SIZES.get(cell.job.dataset.name, (10000, 2000))
    ds = cell.job.dataset
    return min(ds.train_limit or full[0], full[0]), min(ds.test_limit or full[1], full[1])


def attack_steps(cell: Cell) -> float:
    """Gradient steps per sample and eps the cell's attack takes (PGD: steps x restarts)."""
    p = cell.attack.params
    name = cell.attack.attack
    if name.startswith(("pgd", "foolbox:")):
        return float(p.get("steps", 10)) * float(p.get("restarts", 1))
    if name == "autoattack":
        return autoattack_steps(p)
    return float(ATTACK_STEPS.get(name, 10))


def autoattack_steps(params: Mapping[str, Any]) -> float:
    """Gradient-step equivalents per sample of an AutoAttack version: APGD-CE on every
    sample, then on the ``AA_SURVIVE`` share APGD-T and FAB-T over the targets and Square's
    queries (``rand``: APGD-CE and APGD-DLR with EOT).

    Example:
        >>> autoattack_steps({"version": "fast", "steps": 10, "targets": 2})
        20.0
    """
    steps = float(params.get("steps", 100))
    targets = float(params.get("targets", 9))
    queries = float(params.get("queries", 5000))
    version = params.get("version", "standard")
    if version == "rand":
        return steps * float(params.get("eot", 20)) * (1 + AA_SURVIVE)
    if version == "fast":
        return steps * (1 + AA_SURVIVE * targets)
    standard = steps + AA_SURVIVE * (2 * targets * steps + queries * AA_QUERY)
    return standard * (AA_LEAN if version == "lean" else 1.0)


def estimate(cells: Iterable[Cell]) -> dict[str, Any]:
    """Counts and an estimated run time (seconds, one worker) of ``cells``.

    Example:
        >>> estimate([])["seconds"]
        0.0
    """
    cells = list(cells)
    train = 0.0
    for job in model_jobs(cells):
        if job.model.stored is not None:
            continue  # evaluated as stored: nothing to train
        cell = next(c for c in cells if c.job.key == job.key)
        n_train, _ = _sizes(cell)
        params = full_model_params(job.model)
        epochs = float(params.get("epochs", 1))
        base = TRAIN_PER_1K.get(job.model.family, 1.0) * n_train / 1000 * epochs
        mult = 1.0 if job.defense.defense == NO_DEFENSE else \
            DEFENSE_COST.get(job.defense.defense, 3.0)
        train += base * mult
    attack = 0.0
    for c in cells:
        n_train, n_test = _sizes(c)
        n = n_test + (min(n_train, c.job.dataset.fit_limit or n_train)
                      if c.attack.attack.startswith("uap") else 0)
        calls = 1 if c.attack.attack in ONCE else len(c.eps)
        attack += calls * (CALL_SECONDS + STEP_PER_1K * n / 1000 * attack_steps(c)
                           * FAMILY_COST.get(c.job.model.family, 5.0))
    return {"cells": len(cells), "rows": sum(len(c.eps) for c in cells),
            "models": len({c.job.key for c in cells}), "train_seconds": round(train, 1),
            "attack_seconds": round(attack, 1), "seconds": round(train + attack, 1)}
