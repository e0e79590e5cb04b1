"""Fixtures of the bring-your-own hardening tests (issue 21): a module of user builders on
``sys.path`` (healthy, NaN, softmax, wrong output shapes) that all take the same weights."""
from __future__ import annotations

import importlib
import sys
import textwrap

import pytest
from safetensors.torch import load_file, save_file

NETS = textwrap.dedent("""
    import torch
    from torch import nn

    def _layers():
        torch.manual_seed(0)
        return nn.Flatten(), nn.Linear(64, 10)

    def net():
        return nn.Sequential(*_layers())

    def softmax_net():
        return nn.Sequential(*_layers(), nn.Softmax(dim=1))

    def log_softmax_net():
        return nn.Sequential(*_layers(), nn.LogSoftmax(dim=1))

    class _Nan(nn.Sequential):
        def forward(self, x):
            return super().forward(x) * float("nan")

    class _Scalar(nn.Sequential):
        def forward(self, x):
            return super().forward(x).sum()

    class _Flat(nn.Sequential):
        def forward(self, x):
            return super().forward(x)[:, 0]

    def nan_net():
        return _Nan(*_layers())

    def scalar_net():
        return _Scalar(*_layers())

    def flat_net():
        return _Flat(*_layers())
""")


@pytest.fixture
def nets(tmp_path, monkeypatch):
    """The module name of the user builders (``hardnets``), importable for the test."""
    folder = tmp_path / "userpath"
    folder.mkdir()
    (folder / "hardnets.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop("hardnets", None)
    yield "hardnets"
    sys.modules.pop("hardnets", None)


@pytest.fixture
def weights(tmp_path, nets):
    """Safetensors weights of every ``hardnets`` builder (keys ``1.weight``, ``1.bias``)."""
    path = tmp_path / "w.safetensors"
    save_file(importlib.import_module(nets).net().state_dict(), path)
    return path


@pytest.fixture
def nan_weights(tmp_path, weights):
    """``weights`` with one NaN in ``1.bias``."""
    state = load_file(weights)
    state["1.bias"][3] = float("nan")
    path = tmp_path / "nan.safetensors"
    save_file(state, path)
    return path
