"""Fixtures the attack tests share (plain helpers: tests/_fixtures.py, e.g. ``ON_MLP``)."""
from __future__ import annotations

import pytest


@pytest.fixture()
def mlp(model):
    """The digits MLP: conftest's cached ``model`` for ``family="mlp"`` (use with ON_MLP)."""
    return model


@pytest.fixture(scope="module")
def data(request, digits_test):
    """The first ``DIGITS_N`` digits test images and labels, ``DIGITS_N`` a constant of the
    test module (default 150)."""
    n = getattr(request.module, "DIGITS_N", 150)
    return digits_test.x[:n], digits_test.y[:n]
