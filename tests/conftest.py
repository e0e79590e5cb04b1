"""Shared fixtures: digits splits and small, quickly trained models of every family.

Plain helpers live in tests/_fixtures.py (`from _fixtures import fitted_model, FAMILIES`).
"""
from __future__ import annotations

import os

import pytest
import torch
from _fixtures import FAMILIES, FAST_PARAMS, SHARED_MNIST, digits, fitted_model  # noqa: F401

# Many tiny tensor ops: one intra-op thread avoids thread thrash on the 2-core CI machine.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _quiet_progress(monkeypatch):
    """No progress lines in tests that parse a command's output (click's ``output`` mixes
    in stderr); tests/hardening/test_progress.py sets its own cadence."""
    monkeypatch.setenv("ROBUSTKIT_PROGRESS_SECONDS", "86400")


@pytest.fixture(scope="session")
def digits_train():
    return digits("train")


@pytest.fixture(scope="session")
def digits_test():
    return digits("test")


@pytest.fixture(scope="session")
def fitted():
    """The cached ``fitted_model(name)`` function."""
    return fitted_model


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
