"""The data contract and the registry of dataset sources behind :func:`load_dataset`.

A dataset is ``Dataset(x, y, info)``: x float32 in [0, 1] shaped (N, C, H, W) or (N, D),
y int64 (N,). A *source* is one kind of dataset (built-in sets, files under the data
root, image folders, tables); each registers a :class:`Source` in :data:`SOURCES` from its
own module, and :mod:`robustkit.data.load` reaches every dataset through them.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from robustkit.registry import Registry

SPLITS = ("train", "test")
DATA_ENV = "ROBUSTKIT_DATA"


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is: its name, split, class names and the shape of one input.

    Tables add ``features`` (column names), ``scale`` (the training split's (min, max) per
    feature, which x was scaled to [0, 1] with) and ``clipped`` (values clipped into [0, 1]).
    """

    name: str
    split: str
    classes: tuple[str, ...]
    input_shape: tuple[int, ...]
    features: tuple[str, ...] = ()
    scale: tuple[tuple[float, float], ...] | None = None
    clipped: int = 0

    @property
    def n_classes(self) -> int:
        return len(self.classes)


class Dataset(NamedTuple):
    """x: float32 (N, C, H, W) or (N, D) in [0, 1]; y: int64 (N,); info: metadata.

    Unpacks as ``x, y, info = load_dataset("digits")``.
    """

    x: torch.Tensor
    y: torch.Tensor
    info: DatasetInfo


# (name, split, root, seed, limit) -> Dataset; limit is None or a positive int
LoadFn = Callable[[str, str, "Path | None", int, "int | None"], Dataset]
# (name, split, root, seed, limit) -> (a torch Dataset of (x, y) items, info)
ItemsFn = Callable[[str, str, "Path | None", int, "int | None"], tuple[Any, DatasetInfo]]


@dataclass(frozen=True)
class Source:
    """One kind of dataset: how :func:`~robustkit.data.load_dataset` checks, describes,
    loads and streams the names it owns.

    Attributes:
        kind: the source's name; for a prefixed source also the prefix of its names
            (``folder`` owns ``folder:PATH...``).
        load: loads one split in memory, honouring ``limit``.
        describe: ``(name, root) -> dict`` as :func:`~robustkit.data.describe` returns it.
        check: raises ValueError for a malformed name of this source (reads no file).
        names: the names a named source owns (``digits``, ``mnist``...); None for a
            prefixed source.
        items: streams a split lazily (a torch ``Dataset``); None to slice ``load``'s.
    """

    kind: str
    load: LoadFn
    describe: Callable[[str, Path | None], dict]
    check: Callable[[str], object]
    names: Callable[[], list[str]] | None = None
    items: ItemsFn | None = None


SOURCES: Registry[Source] = Registry("dataset source")


def data_root(root: str | os.PathLike | None = None) -> Path | None:
    """The local data root: ``root`` if given, else ``$ROBUSTKIT_DATA``, else None."""
    if root is not None:
        return Path(root)
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else None


def subset(ds: Dataset, n: int, *, seed: int = 0) -> Dataset:
    """A stratified, seeded subset of ``n`` samples (every class keeps its share)."""
    keep = subset_index(ds.y.numpy(), n, seed=seed)
    return Dataset(ds.x[keep], ds.y[keep], ds.info)


def limited(ds: Dataset, limit: int | None, seed: int) -> Dataset:
    """``ds``, or its stratified subset of ``limit`` samples when it holds more."""
    return subset(ds, limit, seed=seed) if limit is not None and limit < len(ds.y) else ds


def subset_index(y: np.ndarray, n: int, *, seed: int = 0) -> np.ndarray:
    """The sorted indices :func:`subset` keeps of labels ``y`` (N,)."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y)
    stratify = y if n >= len(counts) and counts[counts > 0].min() >= 2 else None
    keep, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=stratify,
                               random_state=seed)
    return np.sort(keep)


def make(name: str, split: str, x: np.ndarray, y: np.ndarray, classes: Any) -> Dataset:
    """A ``Dataset`` from numpy arrays: uint8 x is scaled by 1/255, float x kept as is."""
    if x.dtype == np.uint8:  # file-based sets: bytes -> [0, 1] without a float64 copy
        xt = torch.from_numpy(x).to(torch.float32).div_(255.0)
    else:
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    info = DatasetInfo(name, split, tuple(str(c) for c in classes), tuple(xt.shape[1:]))
    return Dataset(xt, yt, info)


@dataclass(frozen=True)
class DatasetCard:
    """What :func:`~robustkit.data.describe` tells about a named dataset before loading it."""

    name: str
    description: str
    input_shape: tuple[int, ...]
    classes: tuple[str, ...]
    folder: str | None = None  # relative to the data root; None for built-in sets
    files: tuple[str, ...] = ()  # the files expected in ``folder``


# (split, root, seed) -> Dataset: one named set's loader
Loader = Callable[[str, "Path | None", int], Dataset]


def named_source(kind: str, sets: Registry[tuple[DatasetCard, Loader]], *,
                 present: Callable[[Path, str], bool] | None = None) -> Source:
    """The :class:`Source` of the named sets in ``sets`` (name -> (card, loader)), which
    the caller's module fills; ``present(folder, file)``: is a card's file there?"""

    def load(name: str, split: str, root: Path | None, seed: int, limit: int | None
             ) -> Dataset:
        return limited(sets.get(name)[1](split, root, seed), limit, seed)

    def describe(name: str, root: Path | None) -> dict:
        card = sets.get(name)[0]
        out = {"name": name, "description": card.description,
               "input_shape": list(card.input_shape), "n_classes": len(card.classes),
               "classes": list(card.classes), "builtin": card.folder is None}
        if card.folder is None:
            return {**out, "location": None, "available": True}
        folder = root / card.folder if root is not None else None
        available = (folder is not None and present is not None
                     and all(present(folder, f) for f in card.files))
        return {**out, "location": str(folder) if folder else None, "available": available}

    return Source(kind, load, describe, check=sets.get, names=sets.names)
