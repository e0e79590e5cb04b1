"""Spec models named by ``stored = "NAME"``: workspace models a sweep evaluates, never trains.

A ``[[models]]`` entry may name a model of the workspace (``robustkit train``, ``defend``
or ``import`` stored it under ``<workdir>/<NAME>``) instead of a family to train::

    [[models]]
    name = "svc"           # display name (default: the stored name)
    stored = "svc"         # found with store.find_model, as `robustkit attack --model svc`

:func:`resolve` finds each one with :func:`robustkit.store.find_model` (the lookup the CLI
commands share), checks its files and that every dataset the entry runs on is the one it
was stored for, and fills in ``ModelEntry.source``. The model's identity is the hash of
its tensor file's SHA-256 and its arch, never its name: re-importing another model under
the same name makes new cells instead of reusing the old rows.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from robustkit import data as datasets
from robustkit import store
from robustkit.models import imported_kinds
from robustkit.sweep.cells import applies, digest, is_wrapper
from robustkit.sweep.spec import NO_DEFENSE, ModelEntry, Spec, SpecError, StoredModel


def content_of(meta: Any) -> str:
    """The identity of a stored model: its tensors' SHA-256 and its arch (for an ONNX
    import, the graph's SHA-256), hashed."""
    return digest({"sha256": meta.sha256, "arch": meta.arch}, 32)


def find(workdir: str | os.PathLike, name: str) -> StoredModel:
    """The stored model ``name`` of ``workdir``, verified (JSON, size, SHA-256); an
    imported one is loaded, so that a builder that no longer imports or a graph that no
    longer converts is found before the sweep runs.

    Raises:
        ValueError: an unsafe name, or files that do not load (``StoreError``).
        FileNotFoundError: no such model; the message lists the stored ones.
    """
    folder = store.find_model(workdir, name)
    meta = store.verify(folder)
    if meta.family in imported_kinds():
        store.load(folder)
    shape = tuple(meta.input_shape) if meta.input_shape else None
    return StoredModel(str(Path(folder).resolve()), content_of(meta), meta.family,
                       meta.dataset, shape, meta.family in imported_kinds()
                       or "imported" in meta.extra)


def resolve(specs: Iterable[Spec], workdir: str | os.PathLike = "runs"
            ) -> tuple[list[Spec], list[str]]:
    """``specs`` with each stored model's ``source`` filled in, and every problem found
    (one line each: file, entry, what is wrong)."""
    out: list[Spec] = []
    problems: list[str] = []
    for spec in specs:
        models = []
        for i, m in enumerate(spec.models):
            if m.stored is not None:
                where = f"{spec.path}: models[{i}].stored"
                try:
                    src = find(workdir, m.stored)
                except (OSError, ValueError) as exc:
                    problems.append(f"{where}: {_one_line(exc)}")
                else:
                    m = dataclasses.replace(m, family=src.family, source=src)
                    problems += _fits(spec, where, m, src)
            models.append(m)
        out.append(dataclasses.replace(spec, models=tuple(models)))
    return out, problems


def resolved(specs: Iterable[Spec], workdir: str | os.PathLike = "runs") -> list[Spec]:
    """:func:`resolve`, raising :class:`SpecError` on any problem."""
    out, problems = resolve(specs, workdir)
    if problems:
        raise SpecError(problems)
    return out


def _fits(spec: Spec, where: str, m: ModelEntry, src: StoredModel) -> list[str]:
    """Datasets the entry runs on must be the model's; defenses must not retrain it."""
    out = []
    for ds in spec.datasets:
        if applies(m.datasets, ds.name) and ds.name != src.dataset:
            out.append(f"{where}: model {m.stored!r} was stored for dataset "
                       f"{src.dataset!r} (input {_shape(src.input_shape)}); it cannot run on "
                       f"{ds.name!r} (input {_shape(_dataset_shape(ds.name))}); restrict "
                       f"the entry with datasets = [{src.dataset!r}]")
    runs = False
    for j, d in enumerate(spec.defenses):
        named = d.models is not None and m.name in d.models
        runs = runs or (d.defense == NO_DEFENSE and (d.models is None or named))
        if not named or d.defense == NO_DEFENSE:
            continue
        dwhere = f"{spec.path}: defenses[{j}].models"
        if is_wrapper(d):
            out.append(f"{dwhere}: {d.name!r} ({d.defense}) over stored model {m.name!r} is "
                       f"not supported in sweeps; stored models take defense 'none' only")
        elif src.imported:
            out.append(f"{dwhere}: {d.name!r} ({d.defense}) must retrain {m.name!r}, an "
                       f"imported {src.family} model: robustkit cannot retrain imported "
                       f"models (it has their weights, not their training); evaluate it "
                       f"with defense 'none'")
        else:
            out.append(f"{dwhere}: {d.name!r} ({d.defense}) trains a new model; stored "
                       f"model {m.name!r} is evaluated as stored: to defend it, give the "
                       f"entry family and params instead of stored")
    if not runs:
        out.append(f"{where}: no defense 'none' of this spec runs on stored model "
                   f"{m.name!r}; add [[defenses]] name = \"none\", defense = \"none\"")
    return out


def _dataset_shape(name: str) -> tuple[int, ...] | None:
    try:
        return tuple(datasets.describe(name)["input_shape"])
    except (KeyError, ValueError, OSError, TypeError):
        return None


def _shape(shape: tuple[int, ...] | None) -> str:
    return "unknown" if shape is None else str(list(shape))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
