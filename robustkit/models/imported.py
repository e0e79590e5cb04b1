"""Imported model kinds the store can rebuild: ``sklearn``, ``onnx`` and ``torch``.

These modules are brought, not trained: :func:`robustkit.models.sklearn.from_sklearn`,
:func:`robustkit.models.onnx_model.from_onnx` and
:func:`robustkit.models.torch_model.from_builder` make them; ``robustkit import`` stores
them; ``store.load`` rebuilds them through the builders registered here (heavy imports
happen only then).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from robustkit.models.registry import IMPORTED


def _sklearn(arch: Mapping[str, Any], directory: Any) -> nn.Module:
    from robustkit.models.sklearn import build

    return build(arch, directory)


def _onnx(arch: Mapping[str, Any], directory: Any) -> nn.Module:
    from robustkit.models.onnx_model import build

    return build(arch, directory)


def _torch(arch: Mapping[str, Any], directory: Any) -> nn.Module:
    from robustkit.models.torch_model import build

    return build(arch, directory)


IMPORTED.add("sklearn", _sklearn)
IMPORTED.add("onnx", _onnx)
IMPORTED.add("torch", _torch)
