"""Image folders in torchvision's ImageFolder layout: ``<folder>/{train,test}/<class>/*.png``.

Read with PIL, resized to one size (bilinear; an image already that size is kept pixel
for pixel), scaled to [0, 1]. Class names are the sorted folder names of the train split;
the test split uses the same indices, so a class folder only the test split has is an
error. Files with other extensions (``.txt``, hidden files) are ignored; a file with an
image extension that does not decode is a one-line ValueError naming it.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from robustkit.data.base import Dataset, DatasetInfo, subset_index

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
              ".pgm")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
DEFAULT_SIZE = 32
# The largest side an image is resized to (a 4096x4096 RGB image is 48 MiB as uint8).
MAX_SIDE = 4096


class FolderImages(TorchDataset):
    """The images of one split, decoded on access: item i is (x (C, H, W) float32 in
    [0, 1], y int64 scalar)."""

    def __init__(self, files: list[Path], labels: list[int], size: tuple[int, int],
                 channels: int) -> None:
        self.files, self.labels = files, labels
        self.size, self.channels = size, channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(read_image(self.files[i], self.size, self.channels))
        return x.to(torch.float32).div_(255.0), torch.tensor(self.labels[i])


def read_image(path: Path, size: tuple[int, int], channels: int) -> np.ndarray:
    """One image as uint8 (C, H, W), resized to ``size`` = (H, W); ValueError if corrupt."""
    from PIL import Image

    try:
        with Image.open(path) as f:
            im = f.convert("L" if channels == 1 else "RGB")
            if im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            arr = np.array(im, dtype=np.uint8)  # a writable copy: torch.from_numpy needs one
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        msg = " ".join(str(exc).split())
        raise ValueError(f"{path}: corrupt or unreadable image ({msg})") from None
    return arr[None] if arr.ndim == 2 else np.ascontiguousarray(arr.transpose(2, 0, 1))


def parse_size(size: str | int | tuple[int, int]) -> tuple[int, int]:
    """``32`` or ``"32"`` -> (32, 32); ``"48x64"`` -> (48, 64) (height x width), each side
    in 1..:data:`MAX_SIDE`."""
    parts = [str(v) for v in size] if isinstance(size, tuple) else str(size).lower().split("x")
    try:
        hw = tuple(int(p) for p in parts)
    except ValueError:
        hw = ()
    if len(hw) == 1:
        hw = (hw[0], hw[0])
    if len(hw) != 2 or min(hw) < 1:
        raise ValueError(f"size must be a positive integer or HxW, got {size!r}")
    if max(hw) > MAX_SIDE:
        raise ValueError(f"size={size!r}: each side must be at most {MAX_SIDE} pixels "
                         f"(every image is resized to it and decoded in memory)")
    return hw  # type: ignore[return-value]


def check_channels(channels: str | int | None) -> int | None:
    """``channels`` as 1 or 3 (None: decided by the first image), else ValueError."""
    if channels is None:
        return None
    if str(channels).strip() not in ("1", "3"):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    return int(channels)


def available_memory() -> int | None:
    """Bytes of memory available to this process now (None where it cannot be told)."""
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(n: int, shape: tuple[int, ...], size: str | int, where: Path) -> None:
    """Refuse to decode ``n`` images of ``shape`` when the uint8 array and its float32
    copy would not fit in the available memory, naming the ``size`` option."""
    need = n * math.prod(shape) * 5  # uint8 decode + float32 tensor
    free = available_memory()
    if free is not None and need > free:
        raise ValueError(f"{where}: {n} images at size={size} ({'x'.join(map(str, shape))}) "
                         f"need about {need / 2**30:.1f} GiB decoded, {free / 2**30:.1f} GiB "
                         f"is available; choose a smaller size=, a --limit, or stream them "
                         f"(attack --stream)")


def scan(split_dir: Path, classes: list[str] | None = None
         ) -> tuple[list[Path], list[int], list[str]]:
    """The image files of a split, their class indices and the class names (sorted folder
    names, or ``classes`` when given, e.g. the train split's for the test split)."""
    if not split_dir.is_dir():
        raise FileNotFoundError(f"{split_dir}: no such folder; an image-folder dataset needs "
                                f"{split_dir.parent}/{{train,test}}/<class>/*.png")
    found = sorted(d.name for d in split_dir.iterdir()
                   if d.is_dir() and not d.name.startswith("."))
    if not found:
        raise ValueError(f"{split_dir}: empty split: no class folders")
    classes = found if classes is None else classes
    extra = sorted(set(found) - set(classes))
    if extra:
        raise ValueError(f"{split_dir}: class folders {extra} are not among the train "
                         f"split's classes {classes}")
    files: list[Path] = []
    labels: list[int] = []
    for name in found:
        imgs = sorted(p for p in (split_dir / name).iterdir()
                      if p.is_file() and p.suffix.lower() in EXTENSIONS
                      and not p.name.startswith("."))
        if not imgs:
            raise ValueError(f"{split_dir / name}: class {name!r} has no images "
                             f"({', '.join(EXTENSIONS)})")
        files += imgs
        labels += [classes.index(name)] * len(imgs)
    return files, labels, classes


def folder_dataset(name: str, folder: Path, split: str, *, size: str | int = DEFAULT_SIZE,
                   channels: str | int | None = None, seed: int = 0,
                   limit: int | None = None) -> tuple[FolderImages, DatasetInfo]:
    """A lazily decoding ``FolderImages`` of one split and its ``DatasetInfo``."""
    hw = parse_size(size)
    files, labels, classes = scan(folder / "train")  # the classes and their indices
    c = _channels(channels, files[0])
    if split != "train":
        files, labels, classes = scan(folder / split, classes)
    if limit is not None and limit < len(files):
        keep = subset_index(np.asarray(labels), limit, seed=seed)
        files, labels = [files[i] for i in keep], [labels[i] for i in keep]
    info = DatasetInfo(name, split, tuple(classes), (c, *hw))
    return FolderImages(files, labels, hw, c), info


def load_folder(name: str, folder: Path, split: str, *, size: str | int = DEFAULT_SIZE,
                channels: str | int | None = None, seed: int = 0,
                limit: int | None = None) -> Dataset:
    """Every image of one split in memory: ``Dataset(x (N, C, H, W), y, info)``."""
    items, info = folder_dataset(name, folder, split, size=size, channels=channels,
                                 seed=seed, limit=limit)
    check_memory(len(items), info.input_shape, size, folder / split)
    x = np.empty((len(items), *info.input_shape), dtype=np.uint8)
    for i, path in enumerate(items.files):
        x[i] = read_image(path, items.size, items.channels)
    xt = torch.from_numpy(x).to(torch.float32).div_(255.0)
    return Dataset(xt, torch.tensor(items.labels, dtype=torch.int64), info)


def _channels(channels: str | int | None, first: Path) -> int:
    """1 or 3: as given, else from the first training image (grayscale -> 1)."""
    given = check_channels(channels)
    if given is not None:
        return given
    from PIL import Image

    try:
        with Image.open(first) as im:
            return 1 if im.mode in GRAY_MODES else 3
    except (OSError, ValueError) as exc:
        raise ValueError(f"{first}: corrupt or unreadable image "
                         f"({' '.join(str(exc).split())})") from None
