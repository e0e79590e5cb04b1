"""Named sets read from files under the local data root, never downloaded (the ``files``
source): ``mnist``, ``fashion-mnist`` (IDX files) and ``cifar10`` (binary batches).

They are parsed by :mod:`robustkit.data.formats` instead of through torchvision:
torchvision's MNIST refuses gzipped-only folders unless it may download, and its CIFAR-10
unpickles the python batches, which we never do.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from robustkit.data.base import (
    DATA_ENV,
    SOURCES,
    Dataset,
    DatasetCard,
    Loader,
    make,
    named_source,
)
from robustkit.data.formats import read_cifar_batch, read_idx
from robustkit.registry import Registry

SETS: Registry[tuple[DatasetCard, Loader]] = Registry("dataset")


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


_MNIST_FILES = {split: (f"{p}-images-idx3-ubyte", f"{p}-labels-idx1-ubyte")
                for split, p in (("train", "train"), ("test", "t10k"))}
_CIFAR_FILES = {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
                "test": ("test_batch.bin",)}
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")

_MNIST = DatasetCard(
    "mnist", "MNIST handwritten digits (60000 train / 10000 test, 28x28)", (1, 28, 28),
    tuple(str(i) for i in range(10)), "MNIST/raw", sum(_MNIST_FILES.values(), ()))
_FASHION = DatasetCard(
    "fashion-mnist", "Fashion-MNIST clothing (60000 train / 10000 test, 28x28)", (1, 28, 28),
    FASHION_CLASSES, "FashionMNIST/raw", sum(_MNIST_FILES.values(), ()))
_CIFAR10 = DatasetCard(
    "cifar10", "CIFAR-10 binary version (50000 train / 10000 test, 3x32x32)", (3, 32, 32),
    CIFAR10_CLASSES, "cifar-10-batches-bin", sum(_CIFAR_FILES.values(), ()))


def _idx_set(card: DatasetCard, split: str, root: Path | None) -> Dataset:
    x, y = read_idx_pair(card.name, split, root, str(card.folder), _MNIST_FILES[split])
    return make(card.name, split, x[:, None], y, card.classes)


def _mnist(split: str, root: Path | None, seed: int) -> Dataset:
    return _idx_set(_MNIST, split, root)


def _fashion_mnist(split: str, root: Path | None, seed: int) -> Dataset:
    return _idx_set(_FASHION, split, root)


def _cifar10(split: str, root: Path | None, seed: int) -> Dataset:
    """CIFAR-10 from its binary batches. The python version (``cifar-10-batches-py``) is
    pickled and is not read, for safety: unpickling a file can execute code."""
    x, y = read_cifar(split, root, str(_CIFAR10.folder), _CIFAR_FILES[split])
    return make("cifar10", split, x, y, CIFAR10_CLASSES)


SETS.add("mnist", (_MNIST, _mnist))
SETS.add("fashion-mnist", (_FASHION, _fashion_mnist))
SETS.add("cifar10", (_CIFAR10, _cifar10))
SOURCES.add("files", named_source("files", SETS,
                                  present=lambda folder, f: find(folder, f) is not None))
