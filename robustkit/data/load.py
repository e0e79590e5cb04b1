"""The one way in: :func:`load_dataset` and the name checks, resolved through the sources.

A name is either a named set (``digits``, ``mnist``... owned by a named source) or
``KIND:PATH[,key=value...]`` owned by the prefixed source ``KIND`` (``folder``, ``table``).
"""
from __future__ import annotations

import os

from robustkit.data.base import SOURCES, SPLITS, Dataset, Source, data_root


def names() -> list[str]:
    """Named sets accepted by :func:`load_dataset` (besides ``folder:``/``table:``).

    Example:
        >>> "digits" in names()
        True
    """
    listed = [SOURCES.get(kind).names for kind in SOURCES]
    return sorted(n for names_of in listed if names_of is not None for n in names_of())


def source_of(name: str) -> Source:
    """The source that owns dataset ``name``; ValueError listing the valid names if none.

    Example:
        >>> source_of("folder:pets,size=64").kind
        'folder'
    """
    if isinstance(name, str) and ":" in name:
        kind = name.partition(":")[0]
        prefixed = [k for k in SOURCES if SOURCES.get(k).names is None]
        if kind not in prefixed:
            raise ValueError(f"dataset {name!r}: unknown kind {kind!r}; user datasets are "
                             f"{' or '.join(k + ':PATH' for k in prefixed)}")
        source = SOURCES.get(kind)
        source.check(name)
        return source
    for kind in SOURCES:
        source = SOURCES.get(kind)
        if source.names is not None and name in source.names():
            return source
    raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(names())}")


def check_name(name: str) -> str:
    """``name`` if :func:`load_dataset` accepts it, else a ValueError listing what does."""
    source_of(name)
    return name


def describe(name: str, root: str | os.PathLike | None = None) -> dict:
    """A JSON-able description of dataset ``name`` and whether its files are present.

    Example:
        >>> describe("digits")["available"]
        True
    """
    return source_of(name).describe(name, data_root(root))


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
    check_args(split, seed, limit)
    return source_of(name).load(name, split, data_root(root), seed, limit)


def check_args(split: str, seed: int, limit: int | None) -> None:
    """ValueError unless ``split``, ``seed`` and ``limit`` are what :func:`load_dataset`
    takes."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit < 1):
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        # the range numpy and scikit-learn take as a random_state
        raise ValueError(f"seed must be an integer in [0, 4294967295], got {seed!r}")
