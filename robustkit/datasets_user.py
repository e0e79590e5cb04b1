"""Your own data under the data root: image folders and tables, in memory or streamed.

A user dataset is named ``KIND:PATH[,key=value...]``, one string that works the same on
the command line (``--dataset folder:pets,size=64``), in sweep specs (``name =
"table:wine,label=quality"``) and in a stored model's metadata. PATH is relative to the
data root (``--data-root``/``$ROBUSTKIT_DATA``; the working directory when none is set)
or absolute.

``folder:PATH``
    torchvision's ImageFolder layout, ``PATH/{train,test}/<class>/*.png|jpg|...``; class
    names are the sorted folder names of the train split. Options: ``size`` (``32`` or
    ``HxW``, default 32: every image is resized to it, bilinear) and ``channels`` (1 or 3;
    default: 1 when the first training image is grayscale, else 3; alpha is dropped).
``table:PATH``
    ``PATH/train.csv`` and ``PATH/test.csv`` (or ``.parquet``): numeric feature columns
    and a label column. Option: ``label`` (default ``label``). Features are scaled to
    [0, 1] with the training split's min/max; see :mod:`robustkit.datasets_table`.

:func:`iter_batches` streams any dataset in batches; image folders are then read lazily,
so memory is bounded by the batch size, not the dataset.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from robustkit.datasets import Dataset, DatasetInfo, data_root, load_dataset

KINDS: dict[str, dict[str, Any]] = {"folder": {"size": "32", "channels": None},
                                    "table": {"label": "label"}}


@dataclass(frozen=True)
class UserName:
    """A parsed ``KIND:PATH[,key=value...]`` dataset name."""

    kind: str
    path: str
    options: dict

    def folder(self, root: Path | None) -> Path:
        """Where the dataset lives: PATH under ``root`` (or as given when root is None)."""
        return Path(self.path) if root is None else Path(root) / self.path


def parse_name(name: str) -> UserName:
    """Split a user dataset name into kind, path and options (defaults filled in).

    Example:
        >>> parse_name("table:wine,label=quality").options
        {'label': 'quality'}
    """
    kind, _, rest = name.partition(":")
    if kind not in KINDS:
        raise ValueError(f"dataset {name!r}: unknown kind {kind!r}; user datasets are "
                         f"{' or '.join(k + ':PATH' for k in KINDS)}")
    path, *pairs = rest.split(",")
    if not path.strip():
        raise ValueError(f"dataset {name!r}: no PATH after {kind + ':'!r}")
    options = dict(KINDS[kind])
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or key.strip() not in options:
            raise ValueError(f"dataset {name!r}: bad option {pair!r}; {kind} takes "
                             f"{', '.join(k + '=...' for k in options)}")
        options[key.strip()] = value.strip()
    return UserName(kind, path.strip(), options)


def load_user(name: str, split: str, root: Path | None, *, seed: int = 0,
              limit: int | None = None) -> Dataset:
    """Load user dataset ``name`` in memory (what :func:`load_dataset` does for it)."""
    parsed = parse_name(name)
    if parsed.kind == "table":
        from robustkit.datasets import subset
        from robustkit.datasets_table import load_table

        ds = load_table(name, parsed.folder(root), split, label=parsed.options["label"])
        return subset(ds, limit, seed=seed) if limit is not None and limit < len(ds.y) else ds
    from robustkit.datasets_folder import load_folder

    return load_folder(name, parsed.folder(root), split, size=parsed.options["size"],
                       channels=parsed.options["channels"], seed=seed, limit=limit)


def describe_user(name: str, root: Path | None) -> dict:
    """What :func:`robustkit.datasets.describe` says about a user dataset (no files read
    beyond the folder listing)."""
    parsed = parse_name(name)
    folder = parsed.folder(root)
    if parsed.kind == "folder":
        available = all((folder / s).is_dir() for s in ("train", "test"))
    else:
        available = all(any((folder / f"{s}{e}").is_file() for e in (".csv", ".parquet"))
                        for s in ("train", "test"))
    return {"name": name, "description": f"your {parsed.kind} data in {folder}",
            "input_shape": [], "n_classes": None, "classes": [], "builtin": False,
            "location": str(folder), "available": available}


@dataclass(frozen=True)
class Batches:
    """A re-iterable stream of ``(x, y)`` batches of one dataset split, with its info.

    Attributes:
        loader: the iterable of batches (a ``torch.utils.data.DataLoader``).
        info: the split's ``DatasetInfo``.
        n: the number of samples.
    """

    loader: Any
    info: DatasetInfo
    n: int

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)

    def labels(self) -> torch.Tensor:
        """The labels (N,) int64, without decoding any input."""
        items = self.loader.dataset
        y = items.labels if hasattr(items, "labels") else items.tensors[1]
        return torch.as_tensor(y, dtype=torch.int64)

    def take(self, index: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples at ``index`` (e.g. a report's gallery), stacked."""
        if not index:
            return torch.empty(0, *self.info.input_shape), torch.empty(0, dtype=torch.int64)
        xs, ys = zip(*(self.loader.dataset[i] for i in index))
        return torch.stack(xs), torch.stack([torch.as_tensor(v) for v in ys])


def iter_batches(name: str, split: str = "test", root: str | os.PathLike | None = None, *,
                 batch_size: int = 256, seed: int = 0, limit: int | None = None,
                 num_workers: int = 0) -> Batches:
    """Stream dataset ``name`` in batches of ``batch_size`` (in order, not shuffled).

    Image folders are read lazily, one batch at a time (``num_workers`` processes may
    decode ahead); every other dataset is loaded with :func:`load_dataset` and sliced.
    The batches hold the same samples, in the same order, as ``load_dataset(name, split,
    root, seed, limit=limit)``.

    Example:
        >>> b = iter_batches("digits", "test", batch_size=100)
        >>> x, y = next(iter(b))
        >>> tuple(x.shape), b.n
        ((100, 1, 8, 8), 450)
    """
    from torch.utils.data import DataLoader, TensorDataset
    from torch.utils.data import Dataset as TorchDataset

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    items: TorchDataset
    if ":" in name and parse_name(name).kind == "folder":
        from robustkit.datasets_folder import folder_dataset

        parsed = parse_name(name)
        items, info = folder_dataset(name, parsed.folder(data_root(root)), split,
                                     size=parsed.options["size"],
                                     channels=parsed.options["channels"], seed=seed,
                                     limit=limit)
    else:
        ds = load_dataset(name, split, root, seed, limit=limit)
        items, info = TensorDataset(ds.x, ds.y), ds.info
    loader = DataLoader(items, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    return Batches(loader, info, len(items))
