"""Model registry: linear, svm, gmm, mlp, cnn, resnet18 -- all differentiable torch modules.

Models brought from elsewhere: :func:`from_sklearn` (fitted scikit-learn classifiers),
``onnx_model.from_onnx`` (ONNX graphs), ``torch_model.from_builder`` (the user's own
network code + safetensors weights), and any ``nn.Module`` mapping x in [0, 1] to logits,
wrapped in :class:`Normalized` if it expects normalized inputs.
"""
from __future__ import annotations

# Importing the family modules registers them (each at its definition site).
from robustkit.models import cnn, gmm, imported, linear, mlp, svm  # noqa: F401
from robustkit.models.preprocess import Normalized
from robustkit.models.registry import (
    Family,
    ModelSpec,
    accuracy,
    build,
    check_params,
    create,
    get,
    imported_kinds,
    model_device,
    names,
    predict,
    register,
    resolve_device,
)
from robustkit.models.sklearn import from_sklearn
from robustkit.models.trainer import TrainRecord, train

__all__ = [
    "Family", "ModelSpec", "Normalized", "TrainRecord", "accuracy", "build", "check_params",
    "create", "from_sklearn", "get", "imported_kinds", "model_device", "names", "predict",
    "register", "resolve_device", "train",
]

