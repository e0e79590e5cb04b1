"""Shared fixtures: digits splits and small, quickly trained models of every family."""
from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
import torch

from robustkit import load_dataset, models

# Small, fast settings per family: enough to be a real classifier, quick to train.
FAST_PARAMS: dict[str, dict] = {
    "linear": {"epochs": 10},
    "svm": {"kernel": "rbf"},
    "gmm": {},
    "mlp": {"hidden": (64,), "epochs": 10},
    "cnn": {"epochs": 8},
}
# The families every contract test runs over (resnet18 is exercised on its own: too slow).
FAMILIES = sorted(FAST_PARAMS)

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"


@functools.lru_cache(maxsize=None)
def _digits(split: str):
    return load_dataset("digits", split, seed=0)


@functools.lru_cache(maxsize=None)
def fitted_model(name: str) -> torch.nn.Module:
    """A family's model trained on the digits train split (cached for the session)."""
    tr = _digits("train")
    spec = models.create(name, **FAST_PARAMS[name])
    return spec.fit(tr.x, tr.y, n_classes=10, seed=0)


@pytest.fixture(scope="session")
def digits_train():
    return _digits("train")


@pytest.fixture(scope="session")
def digits_test():
    return _digits("test")


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    return request.param


@pytest.fixture()
def model(family):
    return fitted_model(family)


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory):
    """A data root with MNIST from ../shared (symlinked); skips when that folder is absent."""
    if not (SHARED_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"MNIST not found at {SHARED_MNIST}")
    root = tmp_path_factory.mktemp("data")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in SHARED_MNIST.glob("*.gz"):
        os.symlink(f, raw / f.name)
    return root
