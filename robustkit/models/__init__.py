"""Model registry: linear, svm, gmm, mlp, cnn, resnet18 -- all differentiable torch modules."""
from __future__ import annotations

from robustkit.models.registry import (
    Family,
    ModelSpec,
    TrainRecord,
    accuracy,
    build,
    check_params,
    create,
    get,
    model_device,
    names,
    predict,
    register,
    resolve_device,
    train,
)

__all__ = [
    "Family", "ModelSpec", "TrainRecord", "accuracy", "build", "check_params", "create", "get", "model_device", "names",
    "predict", "register", "resolve_device", "train",
]
