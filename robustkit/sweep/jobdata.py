"""What tasks read: the sweep's data subsets and models, cached per process.

Shared by :mod:`robustkit.sweep.tasks` (training, galleries) and
:mod:`robustkit.sweep.evaluation` (cells). A job's model is the one the sweep trained into
its store (``<models_dir>/<key>``) or, for a spec entry with ``stored = "NAME"``, the
workspace model it names, checked to be the very model the cell ids were made from.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustkit.sweep.cells import ModelJob


@dataclass(frozen=True)
class Context:
    """Everything a task needs besides its job: where models and data live, the device."""

    models_dir: str
    data_root: str | None = None
    device: str = "cpu"
    threads: int | None = None


@functools.lru_cache(maxsize=16)
def _data(name: str, split: str, root: str | None, seed: int, limit: int | None):
    from robustkit.data import load_dataset

    return load_dataset(name, split, root=root, seed=seed, limit=limit)


def train_data(job: ModelJob, ctx: Context):
    """The training subset a job's model is trained on."""
    return _data(job.dataset.name, "train", ctx.data_root, job.seed, job.dataset.train_limit)


def test_data(job: ModelJob, ctx: Context):
    """The attacked test subset of a job's dataset (same for every model of the sweep)."""
    return _data(job.dataset.name, "test", ctx.data_root, job.seed, job.dataset.test_limit)


@functools.lru_cache(maxsize=8)
def _stream(name: str, split: str, root: str | None, seed: int, limit: int | None,
            batch_size: int):
    from robustkit.data import iter_batches

    return iter_batches(name, split, root, batch_size=batch_size, seed=seed, limit=limit)


def stream_data(job: ModelJob, ctx: Context, split: str):
    """The test (or fit) data of a ``stream = true`` dataset as batches, read lazily."""
    ds = job.dataset
    limit = ds.test_limit if split == "test" else ds.fit_limit or ds.train_limit
    return _stream(ds.name, split, ctx.data_root, job.seed, limit, ds.batch_size or 1024)


def fit_data(job: ModelJob, ctx: Context):
    """The training subset universal perturbations are fitted on."""
    limit = job.dataset.fit_limit or job.dataset.train_limit
    return _data(job.dataset.name, "train", ctx.data_root, job.seed, limit)


def model_path(ctx: Context, key: str) -> Path:
    return Path(ctx.models_dir) / key


def is_trained(ctx: Context, key: str) -> bool:
    return (model_path(ctx, key) / "model.json").is_file()


@functools.lru_cache(maxsize=4)
def _load(path: str, content: str | None = None) -> tuple[nn.Module, Any]:
    # ``content`` is part of the cache key: a model re-imported under the same folder
    # during the process is loaded again, never served from the cache.
    from robustkit import store

    return store.load(path)


def load_model(ctx: Context, key: str) -> tuple[nn.Module, Any]:
    """The model the sweep stored under ``key`` (cached per process: consecutive cells
    share their model)."""
    return _load(str(model_path(ctx, key)))


def job_path(ctx: Context, job: ModelJob) -> Path:
    """Where a job's model is: its workspace folder (``stored``) or the sweep's store."""
    src = job.model.source
    return Path(src.path) if src is not None else model_path(ctx, job.key)


def is_ready(ctx: Context, job: ModelJob) -> bool:
    """Whether a job's model is there (trained already, or stored by the user)."""
    return (job_path(ctx, job) / "model.json").is_file()


def job_model(ctx: Context, job: ModelJob) -> tuple[nn.Module, Any]:
    """A job's model; a stored one must still be the model its cells were keyed by.

    Raises:
        ValueError: the stored model was replaced (say, re-imported) since the sweep began.
    """
    src = job.model.source
    if src is None:
        return load_model(ctx, job.key)
    from robustkit import store
    from robustkit.sweep.stored import content_of

    # the folder's JSON first (cheap): a cached module of the old content is not served
    model, meta = (_load(src.path, src.content)
                   if content_of(store.read_model_meta(src.path)) == src.content else (None, None))
    if model is None or meta is None or content_of(meta) != src.content:
        _load.cache_clear()
        raise ValueError(f"stored model {job.model.stored!r} ({src.path}) was replaced after "
                         f"the sweep started; run the sweep again to evaluate the new one")
    return model, meta


def gallery_inputs(job: ModelJob, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
    """The first test input of each class in turn (0, 1, 2, ...), ``job.gallery`` of them
    (of a streamed dataset, only those are read)."""
    if job.dataset.stream:
        stream = stream_data(job, ctx, "test")
        return stream.take(_gallery_order(stream.labels(), job.gallery))
    te = test_data(job, ctx)
    idx = torch.tensor(_gallery_order(te.y, job.gallery), dtype=torch.long)
    return te.x[idx], te.y[idx]


def _gallery_order(y: torch.Tensor, gallery: int) -> list[int]:
    order: list[int] = []
    remaining = list(range(len(y)))
    while len(order) < min(gallery, len(y)):
        seen: set[int] = set()
        for i in list(remaining):
            c = int(y[i])
            if c not in seen:
                seen.add(c)
                order.append(i)
                remaining.remove(i)
                if len(order) == gallery:
                    break
    return order


