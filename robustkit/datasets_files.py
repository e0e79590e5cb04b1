"""Locate and read the files of the file-based built-in sets (MNIST-style IDX, CIFAR-10).

Kept apart from :mod:`robustkit.datasets` (which registers the sets and imports this
module lazily): plain functions from folders to uint8 arrays, no dataset objects.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from robustkit.dataformats import read_cifar_batch, read_idx

DATA_ENV = "ROBUSTKIT_DATA"


def find(folder: Path, name: str) -> Path | None:
    """``folder/name`` if present, else ``folder/name.gz`` if present, else None."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def locate(name: str, split: str, root: Path | None, folder: str, files: tuple[str, ...],
           hint: str) -> list[Path]:
    """The paths of ``files`` for dataset ``name`` in ``root/folder``, or a one-line
    FileNotFoundError saying which files are missing, where they were expected and how to
    set the data root."""
    if root is None:
        raise FileNotFoundError(
            f"dataset {name!r} is read from a local data root (never downloaded): pass "
            f"--data-root DIR (root=DIR) or set {DATA_ENV}; expected {', '.join(files)} "
            f"in DIR/{folder}/ ({hint})")
    where = root / folder
    found = [find(where, f) for f in files]
    missing = [f for f, p in zip(files, found) if p is None]
    if missing:
        raise FileNotFoundError(
            f"dataset {name!r} ({split}): missing {', '.join(missing)} in {where}/ "
            f"({hint}); set the data root with --data-root DIR or {DATA_ENV}")
    return [p for p in found if p is not None]


def read_idx_pair(name: str, split: str, root: Path | None, folder: str,
                  files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 28, 28) and labels uint8 (N,) of an MNIST-style set."""
    hint = "the IDX files, gzipped (.gz) or extracted, as torchvision lays them out"
    img_path, lbl_path = locate(name, split, root, folder, files, hint)
    x = read_idx(img_path, ndim=3)
    y = read_idx(lbl_path, ndim=1)
    if x.shape[1:] != (28, 28) or len(x) != len(y):
        raise ValueError(f"dataset {name!r}: {img_path.name} holds images {x.shape} and "
                         f"{lbl_path.name} {len(y)} labels; expected (N, 28, 28) and N")
    if int(y.max()) > 9:
        raise ValueError(f"dataset {name!r}: label {int(y.max())} in {lbl_path} is not 0-9")
    return x, y


def read_cifar(split: str, root: Path | None, folder: str,
               files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 3, 32, 32) and labels uint8 (N,) of CIFAR-10's binary batches."""
    hint = ("the *binary* version, cifar-10-binary.tar.gz extracted; the python (pickle) "
            "version is not read, for safety")
    parts = [read_cifar_batch(p) for p in locate("cifar10", split, root, folder, files, hint)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
