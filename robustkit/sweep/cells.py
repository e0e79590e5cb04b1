"""Expand specs into cells: one cell is (dataset, model, defense, attack, seed) over an eps grid.

Identities are content hashes, never display names or positions, so that renaming a model
in a spec, reordering tables or splitting a spec in two keeps finished work:

- the **model key** hashes what training depends on: family, its parameters with the
  family defaults filled in, dataset, training subset, seed, defense and its parameters;
- the **cell id** hashes the model key plus the attack, its parameters and the test data;
- a **stored model** (``stored = "NAME"``) is keyed by its content (tensor SHA-256 and
  arch, :mod:`robustkit.sweep.stored`), dataset and seed: never by its name.

A results row is identified by ``(cell_id, eps)``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from robustkit.sweep.certify_spec import cell_certify
from robustkit.sweep.spec import (
    NO_DEFENSE,
    AttackEntry,
    DatasetEntry,
    DefenseEntry,
    ModelEntry,
    Spec,
)


@dataclass(frozen=True)
class ModelJob:
    """A model to train once (possibly with a training defense) and store under ``key``."""

    key: str
    dataset: DatasetEntry
    model: ModelEntry
    defense: DefenseEntry
    seed: int
    gallery: int

    @property
    def label(self) -> str:
        return f"{self.dataset.name}/{self.model.name}/{self.defense.name}/seed{self.seed}"


@dataclass(frozen=True)
class Cell:
    """One attack evaluation: ``len(attack.eps)`` results rows share its ``cell_id``."""

    cell_id: str
    spec: str
    job: ModelJob
    attack: AttackEntry
    certify: Mapping[str, Any] | None = None  # certificate options (sweep.certify_spec)

    @property
    def label(self) -> str:
        return f"{self.job.dataset.name}/{self.job.model.name}/{self.job.defense.name}/" \
               f"{self.attack.name}/seed{self.job.seed}"

    @property
    def eps(self) -> tuple[float, ...]:
        return self.attack.eps


def digest(obj: Any, n: int = 16) -> str:
    """Hex sha256 of the canonical JSON of ``obj`` (tuples and lists hash alike), ``n`` chars."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def full_model_params(model: ModelEntry) -> dict[str, Any]:
    """The family parameters with defaults filled in (so ``{}`` and explicit defaults match)."""
    from robustkit import models

    if model.stored is not None:
        return {"stored": model.stored}
    try:
        return dict(models.create(model.family, **model.params).params)
    except ValueError:  # reported by validation; keep the raw params for a stable key
        return dict(model.params)


def full_defense_params(defense: DefenseEntry, family: str) -> dict[str, Any]:
    """The defense parameters with defaults filled in (``{}`` for no defense)."""
    if defense.defense == NO_DEFENSE:
        return {}
    from robustkit import defenses

    params = dict(defense.params)
    eps = params.pop("eps", None)
    try:
        merged = defenses.get(defense.defense).check(family, params)
    except ValueError:
        merged = params
    return {**merged, "eps": eps}


def model_key(dataset: DatasetEntry, model: ModelEntry, defense: DefenseEntry,
              seed: int) -> str:
    """The store key of a trained model: a hash of everything its training depends on.

    Example:
        >>> from robustkit.sweep.spec import DatasetEntry, DefenseEntry, ModelEntry
        >>> k = model_key(DatasetEntry("digits"), ModelEntry("lin", "linear"),
        ...               DefenseEntry("none", "none"), 0)
        >>> len(k)
        16
    """
    if model.stored is not None:
        if model.source is None:
            raise ValueError(f"stored model {model.stored!r} is not resolved: pass the specs "
                             f"through robustkit.sweep.stored.resolve first")
        return digest({"stored": model.source.content, "dataset": dataset.name,
                       "seed": seed, "defense": defense.defense})
    return digest({
        "family": model.family, "params": full_model_params(model),
        "dataset": dataset.name, "train_limit": dataset.train_limit, "seed": seed,
        "defense": defense.defense, "defense_params": full_defense_params(defense, model.family),
    })


def cell_id(key: str, dataset: DatasetEntry, attack: AttackEntry,
            certify: Mapping[str, Any] | None = None) -> str:
    """The id of a cell: model key, attack, attack parameters, the attacked data and the
    certificate options (only when it certifies: other cells keep their ids)."""
    ident: dict[str, Any] = {"model_key": key, "attack": attack.attack,
                             "params": dict(attack.params), "test_limit": dataset.test_limit,
                             "fit_limit": dataset.fit_limit}
    if attack.adaptive:
        ident["adaptive"] = True
    if certify is not None:
        ident["certify"] = dict(certify)
    if dataset.stream:  # universal fitting visits a stream in its own order
        ident["stream"] = dataset.batch_size or 1024
    return digest(ident)


# Attacks a defended system (classifier behind a detector/rectifier) is scored with, and
# their names in ``robustkit.defenses.detection.detection_scores``.
SYSTEM_ATTACKS = {"fgsm": "fgsm", "pgd": "pgd", "uap_sgd": "uap", "noise": "noise",
                  "autoattack": "autoattack"}


def is_wrapper(defense: DefenseEntry) -> bool:
    """Whether the defense wraps a fitted model (detector, prn) rather than training one."""
    if defense.defense == NO_DEFENSE:
        return False
    from robustkit import defenses

    try:
        return defenses.get(defense.defense).kind == "wrapper"
    except ValueError:
        return False


def attack_applies(attack: AttackEntry, model: ModelEntry, defense: DefenseEntry) -> bool:
    """Whether an attack runs on a (model, defense): its filters, then what can be scored.

    Adaptive attacks run only against wrapper defenses; wrapper defenses are scored only
    by the attacks of ``SYSTEM_ATTACKS`` (both unless the spec names them explicitly, in
    which case validation reports the mismatch).
    """
    if not (applies(attack.models, model.name) and applies(attack.defenses, defense.name)):
        return False
    wrapper = is_wrapper(defense)
    if attack.adaptive and not wrapper:
        return False
    return not wrapper or attack.attack in SYSTEM_ATTACKS


def applies(spec_entry_filter: tuple[str, ...] | None, name: str) -> bool:
    return spec_entry_filter is None or name in spec_entry_filter


def defense_applies(defense: DefenseEntry, model: ModelEntry) -> bool:
    """Whether a defense runs on a model: its ``models`` list, else the registry's families."""
    if defense.models is not None:
        return model.name in defense.models
    if defense.defense == NO_DEFENSE:
        return True
    if model.stored is not None:
        return False  # stored models are evaluated as stored (validation explains)
    from robustkit import defenses

    try:
        families = defenses.get(defense.defense).families
    except ValueError:
        return True  # unknown names are reported by validation
    return families is None or model.family in families


def expand(specs: Iterable[Spec]) -> list[Cell]:
    """All cells of ``specs`` in spec order; a cell listed twice (same id) is kept once,
    with the union of its eps grids.

    Example:
        >>> from robustkit.sweep.spec import parse_spec
        >>> spec = parse_spec('''
        ... [[datasets]]
        ... name = "digits"
        ... [[models]]
        ... family = "linear"
        ... [[attacks]]
        ... attack = "fgsm"
        ... ''')
        >>> [c.label for c in expand([spec])]
        ['digits/linear/none/fgsm/seed0']
    """
    cells: dict[str, Cell] = {}
    for spec in specs:
        for ds in spec.datasets:
            for model in spec.models:
                if not applies(model.datasets, ds.name):
                    continue
                for defense in spec.defenses:
                    if not defense_applies(defense, model):
                        continue
                    for seed in spec.seeds:
                        key = model_key(ds, model, defense, seed)
                        job = ModelJob(key, ds, model, defense, seed, spec.gallery)
                        for attack in spec.attacks:
                            if not attack_applies(attack, model, defense):
                                continue
                            cert = None if ds.stream or is_wrapper(defense) else cell_certify(
                                spec.certify, model.certify, model.name, attack.name)
                            cid = cell_id(key, ds, attack, cert)
                            old = cells.get(cid)
                            cells[cid] = Cell(cid, spec.name, job, attack, cert) \
                                if old is None else _merge(old, attack)
    return list(cells.values())


def _merge(cell: Cell, attack: AttackEntry) -> Cell:
    """The same cell in two specs: keep the first, with the union of the eps grids."""
    eps = cell.attack.eps + tuple(e for e in attack.eps if e not in cell.attack.eps)
    return dataclasses.replace(cell, attack=dataclasses.replace(cell.attack, eps=eps))


def model_jobs(cells: Iterable[Cell]) -> list[ModelJob]:
    """The distinct models the cells need, in first-use order."""
    jobs: dict[str, ModelJob] = {}
    for c in cells:
        jobs.setdefault(c.job.key, c.job)
    return list(jobs.values())


def summarize(cells: list[Cell]) -> Mapping[str, int]:
    """Counts for a dry run: cells, rows, distinct models, datasets, attacks."""
    return {
        "cells": len(cells), "rows": sum(len(c.eps) for c in cells),
        "models": len({c.job.key for c in cells}),
        "datasets": len({c.job.dataset.name for c in cells}),
        "attacks": len({c.attack.name for c in cells}),
    }
