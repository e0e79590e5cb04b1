"""Datasets in one contract: x float32 in [0, 1] shaped (N, C, H, W) or (N, D), y int64.

Built-in (no files needed): ``digits`` (scikit-learn's 8x8 handwritten digits) and the
2-D lecture sets ``moons``, ``xor``, ``blobs``. From a local data root (never downloaded):
``mnist``, ``fashion-mnist``, ``cifar10``, and your own data as ``folder:PATH`` (image
folders) or ``table:PATH`` (CSV/Parquet); see :mod:`robustkit.datasets_user`.

File-based sets are parsed by :mod:`robustkit.datasets_files` (IDX for MNIST-style sets,
CIFAR-10's *binary* batches) instead of through torchvision: torchvision's MNIST refuses gzipped-only folders unless
it may download, and its CIFAR-10 unpickles the python batches, which we never do.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from robustkit.registry import Registry

SPLITS = ("train", "test")
DATA_ENV = "ROBUSTKIT_DATA"  # also in datasets_files (no import cycle)


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


Loader = Callable[[str, "Path | None", int], Dataset]
_LOADERS: Registry[Loader] = Registry("dataset")


@dataclass(frozen=True)
class DatasetCard:
    """What :func:`describe` tells about a dataset before loading it."""

    name: str
    description: str
    input_shape: tuple[int, ...]
    classes: tuple[str, ...]
    folder: str | None = None  # relative to the data root; None for built-in sets
    files: tuple[str, ...] = ()  # the files expected in ``folder``


_CARDS: dict[str, DatasetCard] = {}


def names() -> list[str]:
    """Built-in names accepted by :func:`load_dataset` (besides ``folder:``/``table:``)."""
    return _LOADERS.names()


def check_name(name: str) -> str:
    """``name`` if :func:`load_dataset` accepts it, else a ValueError listing what does."""
    if isinstance(name, str) and ":" in name:
        from robustkit.datasets_user import parse_name

        parse_name(name)
        return name
    _LOADERS.get(name)
    return name


def describe(name: str, root: str | os.PathLike | None = None) -> dict:
    """A JSON-able description of dataset ``name`` and whether its files are present.

    Example:
        >>> describe("digits")["available"]
        True
    """
    if ":" in check_name(name):  # unknown names raise with the valid ones
        from robustkit.datasets_user import describe_user

        return describe_user(name, data_root(root))
    card = _CARDS[name]
    out = {"name": name, "description": card.description,
           "input_shape": list(card.input_shape), "n_classes": len(card.classes),
           "classes": list(card.classes), "builtin": card.folder is None}
    if card.folder is None:
        return {**out, "location": None, "available": True}
    from robustkit.datasets_files import find

    base = data_root(root)
    folder = base / card.folder if base is not None else None
    available = folder is not None and all(find(folder, f) is not None for f in card.files)
    return {**out, "location": str(folder) if folder else None, "available": available}


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
        name: one of :func:`names`, or ``folder:PATH[,size=H[xW]][,channels=C]`` (an image
            folder) or ``table:PATH[,label=COL]`` (CSV/Parquet) under the data root.
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
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit < 1):
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        # the range numpy and scikit-learn take as a random_state
        raise ValueError(f"seed must be an integer in [0, 4294967295], got {seed!r}")
    if ":" in check_name(name):
        from robustkit.datasets_user import load_user

        return load_user(name, split, data_root(root), seed=seed, limit=limit)
    ds = _LOADERS.get(name)(split, data_root(root), seed)
    if limit is not None and limit < len(ds.y):
        ds = subset(ds, limit, seed=seed)
    return ds


def subset(ds: Dataset, n: int, *, seed: int = 0) -> Dataset:
    """A stratified, seeded subset of ``n`` samples (every class keeps its share)."""
    keep = subset_index(ds.y.numpy(), n, seed=seed)
    return Dataset(ds.x[keep], ds.y[keep], ds.info)


def subset_index(y: np.ndarray, n: int, *, seed: int = 0) -> np.ndarray:
    """The sorted indices :func:`subset` keeps of labels ``y`` (N,)."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y)
    stratify = y if n >= len(counts) and counts[counts > 0].min() >= 2 else None
    keep, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=stratify,
                               random_state=seed)
    return np.sort(keep)


def _split(x: np.ndarray, y: np.ndarray, split: str, seed: int, test_size: float = 0.25):
    from sklearn.model_selection import train_test_split

    xtr, xte, ytr, yte = train_test_split(
        x, y, test_size=test_size, stratify=y, random_state=seed
    )
    return (xtr, ytr) if split == "train" else (xte, yte)


def _make(name: str, split: str, x: np.ndarray, y: np.ndarray, classes) -> Dataset:
    if x.dtype == np.uint8:  # file-based sets: bytes -> [0, 1] without a float64 copy
        xt = torch.from_numpy(x).to(torch.float32).div_(255.0)
    else:
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    info = DatasetInfo(name, split, tuple(str(c) for c in classes), tuple(xt.shape[1:]))
    return Dataset(xt, yt, info)


_CARDS["digits"] = DatasetCard(
    "digits", "scikit-learn's 8x8 handwritten digits (1797 images, bundled)", (1, 8, 8),
    tuple(str(i) for i in range(10)))


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


_CARDS["moons"] = DatasetCard(
    "moons", "2-D: two interleaving half-moons (1000 points, not linearly separable)", (2,), tuple(str(i) for i in range(2)))


@_LOADERS.register("moons")
def _moons(split: str, root: Path | None, seed: int) -> Dataset:
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=1000, noise=0.15, random_state=seed)
    return _two_d("moons", split, seed, x, y)


_CARDS["xor"] = DatasetCard(
    "xor", "2-D: four Gaussian clusters in an XOR layout (1000 points)", (2,), tuple(str(i) for i in range(2)))


@_LOADERS.register("xor")
def _xor(split: str, root: Path | None, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    centers = np.array([[0, 0], [1, 1], [0, 1], [1, 0]], dtype=float)
    k = rng.integers(0, 4, size=1000)
    x = centers[k] + rng.normal(scale=0.18, size=(1000, 2))
    y = (k >= 2).astype(np.int64)
    return _two_d("xor", split, seed, x, y)


_CARDS["blobs"] = DatasetCard(
    "blobs", "2-D: three Gaussian blobs (1000 points, linearly separable)", (2,), tuple(str(i) for i in range(3)))


@_LOADERS.register("blobs")
def _blobs(split: str, root: Path | None, seed: int) -> Dataset:
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n_samples=1000, centers=3, cluster_std=1.0, random_state=seed)
    return _two_d("blobs", split, seed, x, y)


# File-based sets: read from the local data root, never downloaded.

_MNIST_FILES = {split: (f"{p}-images-idx3-ubyte", f"{p}-labels-idx1-ubyte")
                for split, p in (("train", "train"), ("test", "t10k"))}
_CIFAR_FILES = {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
                "test": ("test_batch.bin",)}
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")

_CARDS["mnist"] = DatasetCard(
    "mnist", "MNIST handwritten digits (60000 train / 10000 test, 28x28)", (1, 28, 28),
    tuple(str(i) for i in range(10)), "MNIST/raw", sum(_MNIST_FILES.values(), ()))
_CARDS["fashion-mnist"] = DatasetCard(
    "fashion-mnist", "Fashion-MNIST clothing (60000 train / 10000 test, 28x28)", (1, 28, 28),
    FASHION_CLASSES, "FashionMNIST/raw", sum(_MNIST_FILES.values(), ()))
_CARDS["cifar10"] = DatasetCard(
    "cifar10", "CIFAR-10 binary version (50000 train / 10000 test, 3x32x32)", (3, 32, 32),
    CIFAR10_CLASSES, "cifar-10-batches-bin", sum(_CIFAR_FILES.values(), ()))


def _idx_set(name: str, split: str, root: Path | None) -> Dataset:
    from robustkit.datasets_files import read_idx_pair

    card = _CARDS[name]
    x, y = read_idx_pair(name, split, root, str(card.folder), _MNIST_FILES[split])
    return _make(name, split, x[:, None], y, card.classes)


@_LOADERS.register("mnist")
def _mnist(split: str, root: Path | None, seed: int) -> Dataset:
    return _idx_set("mnist", split, root)


@_LOADERS.register("fashion-mnist")
def _fashion_mnist(split: str, root: Path | None, seed: int) -> Dataset:
    return _idx_set("fashion-mnist", split, root)


@_LOADERS.register("cifar10")
def _cifar10(split: str, root: Path | None, seed: int) -> Dataset:
    """CIFAR-10 from its binary batches. The python version (``cifar-10-batches-py``) is
    pickled and is not read, for safety: unpickling a file can execute code."""
    from robustkit.datasets_files import read_cifar

    x, y = read_cifar(split, root, str(_CARDS["cifar10"].folder), _CIFAR_FILES[split])
    return _make("cifar10", split, x, y, CIFAR10_CLASSES)
