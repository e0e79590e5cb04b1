"""Built-in sets that need no files: scikit-learn's 8x8 ``digits`` and the 2-D lecture
sets ``moons``, ``xor`` and ``blobs`` (the ``builtin`` source).

The 2-D sets are min-max scaled to [0, 1]; every set is split 75/25 into train and test,
stratified, with the caller's seed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from robustkit.data.base import SOURCES, Dataset, DatasetCard, Loader, make, named_source
from robustkit.registry import Registry

SETS: Registry[tuple[DatasetCard, Loader]] = Registry("dataset")


def _split(x: np.ndarray, y: np.ndarray, split: str, seed: int, test_size: float = 0.25):
    from sklearn.model_selection import train_test_split

    xtr, xte, ytr, yte = train_test_split(
        x, y, test_size=test_size, stratify=y, random_state=seed
    )
    return (xtr, ytr) if split == "train" else (xte, yte)


def _digits(split: str, root: Path | None, seed: int) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None, :, :]
    xs, ys = _split(x, d.target, split, seed)
    return make("digits", split, xs, ys, range(10))


SETS.add("digits", (DatasetCard(
    "digits", "scikit-learn's 8x8 handwritten digits (1797 images, bundled)", (1, 8, 8),
    tuple(str(i) for i in range(10))), _digits))


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = x.min(axis=0), x.max(axis=0)
    return (x - lo) / np.where(hi > lo, hi - lo, 1.0)


def _two_d(name: str, split: str, seed: int, x: np.ndarray, y: np.ndarray) -> Dataset:
    x = _minmax(x)
    xs, ys = _split(x, y, split, seed)
    return make(name, split, xs, ys, range(int(y.max()) + 1))


def _moons(split: str, root: Path | None, seed: int) -> Dataset:
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=1000, noise=0.15, random_state=seed)
    return _two_d("moons", split, seed, x, y)


SETS.add("moons", (DatasetCard(
    "moons", "2-D: two interleaving half-moons (1000 points, not linearly separable)", (2,),
    ("0", "1")), _moons))


def _xor(split: str, root: Path | None, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    centers = np.array([[0, 0], [1, 1], [0, 1], [1, 0]], dtype=float)
    k = rng.integers(0, 4, size=1000)
    x = centers[k] + rng.normal(scale=0.18, size=(1000, 2))
    y = (k >= 2).astype(np.int64)
    return _two_d("xor", split, seed, x, y)


SETS.add("xor", (DatasetCard(
    "xor", "2-D: four Gaussian clusters in an XOR layout (1000 points)", (2,), ("0", "1")),
    _xor))


def _blobs(split: str, root: Path | None, seed: int) -> Dataset:
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n_samples=1000, centers=3, cluster_std=1.0, random_state=seed)
    return _two_d("blobs", split, seed, x, y)


SETS.add("blobs", (DatasetCard(
    "blobs", "2-D: three Gaussian blobs (1000 points, linearly separable)", (2,),
    ("0", "1", "2")), _blobs))

SOURCES.add("builtin", named_source("builtin", SETS))
