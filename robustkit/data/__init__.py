"""Datasets in one contract: x float32 in [0, 1] shaped (N, C, H, W) or (N, D), y int64.

One way in, :func:`load_dataset` (and :func:`iter_batches` to stream), over a registry of
sources (:data:`SOURCES`), each registered in its own module:

- ``builtin`` (:mod:`~robustkit.data.builtin`, no files needed): ``digits``
  (scikit-learn's 8x8 handwritten digits) and the 2-D lecture sets ``moons``, ``xor``,
  ``blobs``;
- ``files`` (:mod:`~robustkit.data.files`, from a local data root, never downloaded):
  ``mnist``, ``fashion-mnist``, ``cifar10``;
- ``folder`` and ``table`` (:mod:`~robustkit.data.user`): your own data as
  ``folder:PATH`` (image folders) or ``table:PATH`` (CSV/Parquet).

Importing this package imports every source module, which registers it; a new source
registers a :class:`Source` the same way and is imported here.

Example:
    >>> from robustkit.data import load_dataset
    >>> x, y, info = load_dataset("moons", "test")
    >>> tuple(x.shape), info.classes
    ((250, 2), ('0', '1'))
"""
from __future__ import annotations

from robustkit.data import builtin, files, user  # noqa: F401  (each registers its source)
from robustkit.data.base import (
    DATA_ENV,
    SOURCES,
    SPLITS,
    Dataset,
    DatasetCard,
    DatasetInfo,
    Source,
    data_root,
    subset,
    subset_index,
)
from robustkit.data.load import check_name, describe, load_dataset, names, source_of
from robustkit.data.stream import Batches, SplitRef, iter_batches
from robustkit.data.table import describe_eps, eps_in_units, scale_doc, scale_from_doc, unscale
from robustkit.data.user import parse_name

__all__ = [
    "DATA_ENV", "SOURCES", "SPLITS", "Batches", "Dataset", "DatasetCard", "DatasetInfo",
    "Source", "SplitRef", "check_name", "data_root", "describe", "describe_eps", "eps_in_units",
    "iter_batches", "load_dataset", "names", "parse_name", "scale_doc", "scale_from_doc",
    "source_of", "subset", "subset_index", "unscale",
]
