"""Tiny dataset files written by tests: IDX (MNIST-style), CIFAR-10 binary batches and
image folders, each returning what it wrote so that a test can compare it with what loads.
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
from PIL import Image

rng = np.random.default_rng(0)


def idx_bytes(arr: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes holding ``arr``."""
    head = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def write_mnist(root: Path, folder: str, *, gz: bool, n: dict[str, int]) -> dict:
    """Tiny MNIST-layout files under ``root/folder``; returns the arrays written."""
    raw = root / folder
    raw.mkdir(parents=True)
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x = rng.integers(0, 256, size=(n[split], 28, 28), dtype=np.uint8)
        x[0, 0, 0], x[0, 0, 1] = 0, 255
        y = np.arange(n[split]) % 10
        for kind, arr in (("images-idx3", x), ("labels-idx1", y)):
            name = f"{prefix}-{kind}-ubyte"
            data = idx_bytes(arr)
            if gz:
                (raw / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (raw / name).write_bytes(data)
        out[split] = (x, y)
    return out


def cifar_bytes(n: int, label_offset: int = 0) -> tuple[bytes, np.ndarray, np.ndarray]:
    x = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    y = (np.arange(n) + label_offset) % 10
    recs = np.concatenate([y[:, None].astype(np.uint8), x.reshape(n, -1)], axis=1)
    return recs.tobytes(), x, y


def write_cifar(root: Path, *, n: int = 3) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """CIFAR-10 binary batches under ``root/cifar-10-batches-bin``: five train batches of
    ``n`` images (labels shifted per batch) and a test batch of ``n + 1``."""
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    parts = []
    for i in range(1, 6):
        blob, x, y = cifar_bytes(n, label_offset=i)
        (folder / f"data_batch_{i}.bin").write_bytes(blob)
        parts.append((x, y))
    blob, xt, yt = cifar_bytes(n + 1)
    (folder / "test_batch.bin").write_bytes(blob)
    return {"train": (np.concatenate([p[0] for p in parts]),
                      np.concatenate([p[1] for p in parts])), "test": (xt, yt)}


FOLDER_CLASSES = ("cat", "dog", "emu")  # the classes write_folder writes


def write_folder(root: Path, name: str = "pets", *, n: int = 3, size: int = 12,
                 mode: str = "RGB", seed: int = 0) -> dict[str, list[tuple[np.ndarray, int]]]:
    """``root/name/{train,test}/<class>/<i>.png``; returns the pixels written, in order."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[tuple[np.ndarray, int]]] = {}
    for split in ("train", "test"):
        out[split] = []
        for k, c in enumerate(FOLDER_CLASSES):
            folder = root / name / split / c
            folder.mkdir(parents=True)
            for i in range(n):
                shape = (size, size, 3) if mode == "RGB" else (size, size)
                px = rng.integers(0, 256, size=shape, dtype=np.uint8)
                Image.fromarray(px, mode=mode).save(folder / f"{i}.png")
                out[split].append((px, k))
            (folder / "notes.txt").write_text("not an image: ignored")
    return out
