"""Files a sweep leaves for the report besides ``results.csv``: ``run.json`` and ``artifacts/``.

Layout (documented in reports/README.md, read by ``robustkit.report``)::

    artifacts/deepfool/<dataset>/<model>__<defense>__seed<S>__<key8>.safetensors
    artifacts/uap/<dataset>/<model>__<defense>__<attack>__eps<E>__seed<S>__<id8>.safetensors
    artifacts/roc/<dataset>/<model>__<defense>__<attack>__eps<E>__seed<S>__<id8>.json

Safetensors files carry their identifiers as string metadata (dataset, model, family,
defense, attack, eps, seed, model_key, cell_id, classes as a JSON list). Every file is
written atomically.
"""
from __future__ import annotations

import json
import re
import sys
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from robustkit.sweep.cells import Cell, ModelJob, full_defense_params, full_model_params

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe(name: Any) -> str:
    """A file-name-safe version of ``name`` (other characters become ``-``)."""
    return _SAFE.sub("-", str(name)).strip("-") or "x"


def deepfool_path(out_dir: Path, job: ModelJob) -> Path:
    return (out_dir / "artifacts" / "deepfool" / safe(job.dataset.name)
            / f"{safe(job.model.name)}__{safe(job.defense.name)}__seed{job.seed}__"
              f"{job.key[:8]}.safetensors")


def cell_artifact_path(out_dir: Path, cell: Cell, kind: str, eps: float, suffix: str) -> Path:
    j = cell.job
    return (out_dir / "artifacts" / kind / safe(j.dataset.name)
            / f"{safe(j.model.name)}__{safe(j.defense.name)}__{safe(cell.attack.name)}__"
              f"eps{eps:g}__seed{j.seed}__{cell.cell_id[:8]}{suffix}")


def write_safetensors(path: Path, tensors: Mapping[str, torch.Tensor],
                      meta: Mapping[str, Any]) -> Path:
    """Write ``tensors`` with string metadata ``meta`` to ``path`` atomically."""
    from safetensors.torch import save

    from robustkit.store import atomic_write

    cpu = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    text = {k: v if isinstance(v, str) else json.dumps(v, default=str) for k, v in meta.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, save(cpu, metadata=text))


def write_json(path: Path, obj: Any) -> Path:
    from robustkit.store import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, json.dumps(obj, indent=1, default=str).encode())


def write_deepfool(out_dir: Path, job: ModelJob, tensors: Mapping[str, torch.Tensor],
                   meta: Mapping[str, Any]) -> Path:
    return write_safetensors(deepfool_path(out_dir, job), tensors,
                             {**meta, "attack": "deepfool"})


def write_cell_artifact(out_dir: Path, cell: Cell, art: Mapping[str, Any]) -> Path:
    """Write one artifact a cell returned: ``{"kind": "uap"|"roc", "eps", "tensors"|"data",
    "meta"}``."""
    meta = {**cell_meta(cell), "eps": art["eps"], **dict(art.get("meta", {}))}
    if art["kind"] == "roc":
        path = cell_artifact_path(out_dir, cell, "roc", art["eps"], ".json")
        return write_json(path, {**meta, **dict(art["data"])})
    path = cell_artifact_path(out_dir, cell, art["kind"], art["eps"], ".safetensors")
    return write_safetensors(path, art["tensors"], meta)


def cell_meta(cell: Cell) -> dict[str, Any]:
    j = cell.job
    return {"dataset": j.dataset.name, "model": j.model.name, "family": j.model.family,
            "defense": j.defense.name, "attack": cell.attack.name, "seed": j.seed,
            "model_key": j.key, "cell_id": cell.cell_id}


def identify(cell: Cell, row: Mapping[str, Any]) -> dict[str, Any]:
    """A results row: the cell's identifier columns, then the row's own values."""
    j = cell.job
    ids = {
        "cell_id": cell.cell_id, "spec": cell.spec, "dataset": j.dataset.name,
        "model": j.model.name, "family": j.model.family,
        "model_params": full_model_params(j.model), "defense": j.defense.name,
        "defense_method": j.defense.defense,
        "defense_params": full_defense_params(j.defense, j.model.family),
        "attack": cell.attack.name, "attack_method": cell.attack.attack,
        "attack_params": dict(cell.attack.params), "adaptive": cell.attack.adaptive,
        "seed": j.seed, "model_key": j.key, "status": "ok", "error": "",
    }
    out = {**ids, **{k: v for k, v in row.items() if k not in ("attack",)}}
    out["eps"] = float(row["eps"])
    return out


def start_run(out_dir: Path, specs: Sequence[Any], ctx: Any, command: Sequence[str],
              workers: int, dask: Any) -> dict[str, Any]:
    """Write ``run.json`` for a starting run (earlier runs of the folder are kept)."""
    from robustkit.store import versions

    path = out_dir / "run.json"
    try:
        previous = json.loads(path.read_text(encoding="utf-8")).get("runs", [])
    except (OSError, ValueError, AttributeError):
        previous = []
    info = {
        "run_id": uuid.uuid4().hex[:12],
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": list(command) or sys.argv,
        "specs": [{"path": s.path, "name": s.name, "text": s.text} for s in specs],
        "seeds": sorted({seed for s in specs for seed in s.seeds}),
        # workspace models named by ``stored``: which files the rows are about
        "stored_models": {m.stored: {"path": m.source.path, "content": m.source.content}
                          for s in specs for m in s.models if m.source is not None},
        "device": ctx.device, "data_root": ctx.data_root, "models_dir": ctx.models_dir,
        "workers": workers, "dask": str(dask) if dask is not None else None,
        "versions": _versions(versions()), "status": "running",
    }
    _write_run(path, info, previous)
    return {**info, "_previous": previous}


def finish_run(out_dir: Path, info: dict[str, Any], summary: Any) -> None:
    """Update ``run.json`` with the summary and durations of the finished run."""
    previous = info.get("_previous", [])
    info.update({"status": "finished",
                 "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "seconds": summary.seconds, "executor": summary.executor,
                 "cells": {"total": summary.cells, "skipped": summary.skipped,
                           "run": summary.run, "errors": summary.errors},
                 "rows": summary.rows, "models_trained": summary.models_trained,
                 "model_errors": summary.model_errors, "phases": dict(summary.phases),
                 "report": summary.report, "report_error": summary.report_error})
    _write_run(out_dir / "run.json", info, previous)


def _write_run(path: Path, info: dict[str, Any], previous: list) -> None:
    current = {k: v for k, v in info.items() if not k.startswith("_")}
    runs = [r for r in previous if r.get("run_id") != current["run_id"]] + [current]
    write_json(path, {**current, "runs": runs})


def _versions(base: dict[str, str]) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = dict(base)
    for pkg in ("torchvision", "pandas", "foolbox", "dask", "distributed"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
