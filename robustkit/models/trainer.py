"""Training a family on a dataset: :func:`train` returns the fitted module and a
:class:`TrainRecord` of what it did (the record :mod:`robustkit.store` keeps with it).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robustkit.data import load_dataset
from robustkit.models.registry import accuracy, check_seed, create, resolve_device


@dataclass(frozen=True)
class TrainRecord:
    """What ``train`` did: family, params, data, seed, accuracies and wall time."""

    model: str
    params: dict
    dataset: str
    seed: int
    n_train: int
    n_test: int
    train_accuracy: float
    test_accuracy: float
    seconds: float
    device: str


def train(
    name: str,
    dataset: str | tuple = "digits",
    *,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = False,
    root: str | None = None,
    limit: int | None = None,
    **params: Any,
) -> tuple[nn.Module, TrainRecord]:
    """Fit family ``name`` on a dataset's train split and score both splits.

    Args:
        name: a family from :func:`robustkit.models.names`.
        dataset: a dataset name (loaded with ``load_dataset``) or a ``(train, test)``
            pair of ``Dataset`` objects.
        seed: seeds the split, the subset and the training.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``...
        limit: train on a stratified subset of this many samples.
        **params: family parameters (see ``get(name).defaults``).

    Returns:
        ``(module, record)``; the module is in eval mode on the CPU.

    Example:
        >>> model, rec = train("linear", "digits", epochs=5)
        >>> rec.test_accuracy > 0.8
        True
    """
    spec = create(name, **params)
    check_seed(seed)
    if isinstance(dataset, str):
        tr = load_dataset(dataset, "train", root=root, seed=seed, limit=limit)
        te = load_dataset(dataset, "test", root=root, seed=seed)
    else:
        tr, te = dataset
    dev = resolve_device(device)
    t0 = time.perf_counter()
    module = spec.fit(tr.x, tr.y, n_classes=tr.info.n_classes, seed=seed, device=dev,
                      progress=progress)
    seconds = time.perf_counter() - t0
    rec = TrainRecord(
        model=name, params=dict(spec.params), dataset=tr.info.name, seed=seed,
        n_train=len(tr.y), n_test=len(te.y),
        train_accuracy=accuracy(module, tr.x, tr.y),
        test_accuracy=accuracy(module, te.x, te.y),
        seconds=seconds, device=str(dev),
    )
    return module, rec
