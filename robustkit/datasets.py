"""Datasets in one contract: x float32 in [0, 1] shaped (N, C, H, W) or (N, D), y int64.

Built-in (no files needed): ``digits`` (scikit-learn's 8x8 handwritten digits) and the
2-D lecture sets ``moons``, ``xor``, ``blobs``. From a local data root (never downloaded):
``mnist``, ``fashion-mnist``, ``cifar10``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch

from robustkit.registry import Registry

SPLITS = ("train", "test")
DATA_ENV = "ROBUSTKIT_DATA"


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is: its name, split, class names and the shape of one input."""

    name: str
    split: str
    classes: tuple[str, ...]
    input_shape: tuple[int, ...]

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


Loader = Callable[[str, "Path | None", int], Dataset]
_LOADERS: Registry[Loader] = Registry("dataset")


def names() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return _LOADERS.names()


def data_root(root: str | os.PathLike | None = None) -> Path | None:
    """The local data root: ``root`` if given, else ``$ROBUSTKIT_DATA``, else None."""
    if root is not None:
        return Path(root)
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else None


def load_dataset(
    name: str,
    split: str = "train",
    root: str | os.PathLike | None = None,
    seed: int = 0,
    *,
    limit: int | None = None,
) -> Dataset:
    """Load a dataset split as tensors in the robustkit data contract.

    Args:
        name: one of :func:`names`.
        split: ``"train"`` or ``"test"``.
        root: local data root for file-based sets (default ``$ROBUSTKIT_DATA``).
        seed: seed of the train/test split for built-in sets, and of ``limit``.
        limit: if given, a stratified subset of at most this many samples.

    Returns:
        ``Dataset(x, y, info)``.

    Example:
        >>> x, y, info = load_dataset("digits", "test")
        >>> tuple(x.shape[1:]), info.n_classes
        ((1, 8, 8), 10)
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    ds = _LOADERS.get(name)(split, data_root(root), seed)
    if limit is not None and limit < len(ds.y):
        ds = subset(ds, limit, seed=seed)
    return ds


def subset(ds: Dataset, n: int, *, seed: int = 0) -> Dataset:
    """A stratified, seeded subset of ``n`` samples (every class keeps its share)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(ds.y))
    y = ds.y.numpy()
    counts = np.bincount(y)
    stratify = y if n >= len(counts) and counts[counts > 0].min() >= 2 else None
    keep, _ = train_test_split(idx, train_size=n, stratify=stratify, random_state=seed)
    keep = np.sort(keep)
    return Dataset(ds.x[keep], ds.y[keep], ds.info)


def _split(x: np.ndarray, y: np.ndarray, split: str, seed: int, test_size: float = 0.25):
    from sklearn.model_selection import train_test_split

    xtr, xte, ytr, yte = train_test_split(
        x, y, test_size=test_size, stratify=y, random_state=seed
    )
    return (xtr, ytr) if split == "train" else (xte, yte)


def _make(name: str, split: str, x: np.ndarray, y: np.ndarray, classes) -> Dataset:
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    info = DatasetInfo(name, split, tuple(str(c) for c in classes), tuple(xt.shape[1:]))
    return Dataset(xt, yt, info)


@_LOADERS.register("digits")
def _digits(split: str, root: Path | None, seed: int) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None, :, :]
    xs, ys = _split(x, d.target, split, seed)
    return _make("digits", split, xs, ys, range(10))


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = x.min(axis=0), x.max(axis=0)
    return (x - lo) / np.where(hi > lo, hi - lo, 1.0)


def _two_d(name: str, split: str, seed: int, x: np.ndarray, y: np.ndarray) -> Dataset:
    x = _minmax(x)
    xs, ys = _split(x, y, split, seed)
    return _make(name, split, xs, ys, range(int(y.max()) + 1))


@_LOADERS.register("moons")
def _moons(split: str, root: Path | None, seed: int) -> Dataset:
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=1000, noise=0.15, random_state=seed)
    return _two_d("moons", split, seed, x, y)


@_LOADERS.register("xor")
def _xor(split: str, root: Path | None, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    centers = np.array([[0, 0], [1, 1], [0, 1], [1, 0]], dtype=float)
    k = rng.integers(0, 4, size=1000)
    x = centers[k] + rng.normal(scale=0.18, size=(1000, 2))
    y = (k >= 2).astype(np.int64)
    return _two_d("xor", split, seed, x, y)


@_LOADERS.register("blobs")
def _blobs(split: str, root: Path | None, seed: int) -> Dataset:
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n_samples=1000, centers=3, cluster_std=1.0, random_state=seed)
    return _two_d("blobs", split, seed, x, y)
