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
    [0, 1] with the training split's min/max; see :mod:`robustkit.data.table`.

Both register a :class:`~robustkit.data.base.Source` here; image folders also stream
lazily (:func:`robustkit.data.iter_batches`), so memory is bounded by the batch size.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustkit.data.base import SOURCES, Dataset, DatasetInfo, Source, limited
from robustkit.data.folder import (
    FolderImages,
    check_channels,
    folder_dataset,
    load_folder,
    parse_size,
)
from robustkit.data.table import load_table

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
    if kind == "folder":
        try:
            parse_size(options["size"])
            check_channels(options["channels"])
        except ValueError as exc:
            raise ValueError(f"dataset {name!r}: {exc}") from None
    return UserName(kind, path.strip(), options)


def _load_table(name: str, split: str, root: Path | None, seed: int,
                limit: int | None) -> Dataset:
    parsed = parse_name(name)
    ds = load_table(name, parsed.folder(root), split, label=parsed.options["label"])
    return limited(ds, limit, seed)


def _folder_items(name: str, split: str, root: Path | None, seed: int,
                  limit: int | None) -> tuple[FolderImages, DatasetInfo]:
    parsed = parse_name(name)
    return folder_dataset(name, parsed.folder(root), split, size=parsed.options["size"],
                          channels=parsed.options["channels"], seed=seed, limit=limit)


def _load_folder(name: str, split: str, root: Path | None, seed: int,
                 limit: int | None) -> Dataset:
    parsed = parse_name(name)
    return load_folder(name, parsed.folder(root), split, size=parsed.options["size"],
                       channels=parsed.options["channels"], seed=seed, limit=limit)


def describe_user(name: str, root: Path | None) -> dict:
    """What :func:`robustkit.data.describe` says about a user dataset (no files read
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


SOURCES.add("folder", Source("folder", _load_folder, describe_user, parse_name,
                             items=_folder_items))
SOURCES.add("table", Source("table", _load_table, describe_user, parse_name))
