"""Finding models in a workspace (``<workdir>/<name>/model.json``): the one lookup that
``attack``, ``score``, ``models list/show`` and sweep specs share."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from robustkit.store.meta import ModelMeta, read_model_meta
from robustkit.tensorfiles import StoreError, check_name


def model_dir(workdir: str | os.PathLike, name: str) -> Path:
    """``<workdir>/<name>`` for a model name that is a safe folder name."""
    return Path(workdir) / check_name(name, "model name")


def find_model(workdir: str | os.PathLike, name: str) -> Path:
    """The folder of stored model ``name`` in ``workdir`` (trained, defended or imported):
    the one lookup ``attack``, ``score``, ``models show`` and sweep specs share.

    Raises:
        ValueError: ``name`` is not a safe folder name.
        FileNotFoundError: no model of that name; the message lists the stored ones.
    """
    folder = model_dir(workdir, name)
    if not (folder / "model.json").is_file():
        known = ", ".join(e.name for e in list_models(workdir)) or "none"
        raise FileNotFoundError(f"no model {name!r} in {workdir}; available: {known}")
    return folder


@dataclass(frozen=True)
class ModelEntry:
    """One folder of a workspace: its metadata, or why it could not be read."""

    name: str
    path: str
    meta: ModelMeta | None
    error: str | None = None


def list_models(workdir: str | os.PathLike) -> list[ModelEntry]:
    """Every model folder (one holding ``model.json``) directly under ``workdir``, by name.

    Unreadable or foreign folders are listed with ``error`` set instead of being skipped.
    """
    root = Path(workdir)
    if not root.is_dir():
        return []
    out = []
    for sub in sorted(p for p in root.iterdir() if (p / "model.json").is_file()):
        try:
            out.append(ModelEntry(sub.name, str(sub), read_model_meta(sub)))
        except (StoreError, ValueError, OSError) as exc:
            out.append(ModelEntry(sub.name, str(sub), None, str(exc)))
    return out
