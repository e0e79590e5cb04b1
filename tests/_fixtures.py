"""Shared test helpers (importable as `_fixtures` from any test: tests/ is on sys.path)."""
from __future__ import annotations

import functools
from pathlib import Path

import torch

from robustkit import load_dataset, models

# Small, fast settings per family: enough to be a real classifier, quick to train.
FAST_PARAMS: dict[str, dict] = {
    # The mini-batch solver keeps the defense tests on the model they were written for
    # (10 Adam epochs: smaller weights, more robust than the L-BFGS optimum).
    "linear": {"solver": "minibatch", "epochs": 10},
    "svm": {"kernel": "rbf"},
    "gmm": {},
    "mlp": {"hidden": (64,), "epochs": 10},
    "cnn": {"epochs": 8},
}
# The families every contract test runs over (resnet18 is exercised on its own: too slow).
FAMILIES = sorted(FAST_PARAMS)

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"


@functools.cache
def digits(split: str):
    """The digits split (seed 0), cached."""
    return load_dataset("digits", split, seed=0)


@functools.cache
def fitted_model(name: str) -> torch.nn.Module:
    """A family's model trained on the digits train split (cached for the session).
    Do not modify it in place: it is shared by every test."""
    tr = digits("train")
    spec = models.create(name, **FAST_PARAMS[name])
    return spec.fit(tr.x, tr.y, n_classes=10, seed=0)
