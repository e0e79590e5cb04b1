"""Streaming a dataset split in batches: :func:`iter_batches` and its :class:`Batches`.

Sources that can read lazily (image folders) are streamed batch by batch, so memory is
bounded by the batch size; every other dataset is loaded once and sliced.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from robustkit.data.base import DatasetInfo, data_root
from robustkit.data.load import check_args, source_of


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
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    check_args(split, seed, limit)
    source = source_of(name)
    if source.items is not None:
        items, info = source.items(name, split, data_root(root), seed, limit)
    else:
        ds = source.load(name, split, data_root(root), seed, limit)
        items, info = TensorDataset(ds.x, ds.y), ds.info
    loader = DataLoader(items, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    return Batches(loader, info, len(items))


@dataclass(frozen=True)
class SplitRef:
    """A dataset split by name, from which each worker reads only its own samples.

    What a sharded evaluation sends to its workers instead of the inputs: a few strings,
    so that no process but the one attacking a shard holds its inputs. Image folders are
    decoded sample by sample; every other source is loaded once per process (kept for the
    next shard of the same split) and sliced. ``root`` is the data root as the driver
    resolved it: workers must see the same path.

    Example:
        >>> ref = SplitRef("digits", "test", limit=100)
        >>> x, y = ref.read(10, 20)
        >>> tuple(x.shape), len(ref)
        ((10, 1, 8, 8), 100)
    """

    name: str
    split: str = "test"
    root: str | None = None
    seed: int = 0
    limit: int | None = None

    def batches(self, batch_size: int = 256) -> Batches:
        """The split as :func:`iter_batches` streams it (held for the next call)."""
        cached = _OPEN.get(self)
        if cached is None:
            _OPEN.clear()  # one split per process at a time: memory of one dataset at most
            cached = _OPEN[self] = iter_batches(self.name, self.split, self.root,
                                                seed=self.seed, limit=self.limit)
        return Batches(DataLoader(cached.loader.dataset, batch_size=batch_size),
                       cached.info, cached.n)

    def read(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples ``start .. stop`` (x float32, y int64), read in this process."""
        if not 0 <= start <= stop <= len(self):
            raise ValueError(f"samples {start}..{stop} are outside the split's 0..{len(self)}")
        items = self.batches().loader.dataset
        if isinstance(items, TensorDataset):
            x, y = items.tensors
            return x[start:stop].clone(), y[start:stop].clone()
        return self.batches().take(list(range(start, stop)))

    def __len__(self) -> int:
        return self.batches().n


_OPEN: dict[SplitRef, Batches] = {}
