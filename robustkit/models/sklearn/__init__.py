"""Fitted scikit-learn classifiers as float64 torch modules (no pickle, no hummingbird).

:func:`from_sklearn` carries a fitted estimator's numbers into small torch modules whose
logits reproduce its ``decision_function`` (or ``predict_log_proba`` where it has none)
to floating-point rounding, whose argmax is its ``predict``, and which are differentiable
with respect to the input, so every robustkit attack applies. The module's ``arch`` is
JSON and its numbers are buffers, so ``robustkit.store`` saves and rebuilds it (family
``"sklearn"``).

Supported (exact types; a Pipeline of StandardScaler / MinMaxScaler / PCA steps, in any
number and order, followed by one of them): see :data:`SUPPORTED`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from robustkit.models.sklearn.discriminant import GaussianNBHead, QDAHead, nb_types, qda_types
from robustkit.models.sklearn.linear import LINEAR_NAMES, LinearHead, is_linear, linear_head
from robustkit.models.sklearn.mlp import MLPHead, mlp_types
from robustkit.models.sklearn.pipeline import (
    STEP_NAMES,
    build_step,
    split_pipeline,
    step_module,
)
from robustkit.models.sklearn.svm import KERNELS, SVCHead, svc_types

SUPPORTED = ("SVC", "NuSVC", *LINEAR_NAMES, "OneVsRestClassifier(<linear>)",
             "QuadraticDiscriminantAnalysis", "GaussianNB", "MLPClassifier")
HEADS: dict[str, type[nn.Module]] = {
    "linear": LinearHead, "svc": SVCHead, "qda": QDAHead, "gaussian_nb": GaussianNBHead,
    "mlp": MLPHead}


class SklearnModel(nn.Module):
    """Flatten x (N, ...) to (N, D), apply the preprocessing steps and the classifier head.

    Computes in float64 whatever the dtype of x, so that scores match scikit-learn's to
    rounding, and returns logits in the dtype of x (as every robustkit model does): pass
    float64 inputs for float64 logits.

    Args:
        input_shape: shape of one input, e.g. (1, 8, 8); D = prod(input_shape) must be the
            estimator's ``n_features_in_``.
        n_classes: K.
        estimator: the estimator's class name (for messages and metadata).
        steps: the ``spec`` dicts of the preprocessing steps, in order.
        head: the ``spec`` dict of the classifier head.
    """

    def __init__(self, input_shape: list[int], n_classes: int, estimator: str,
                 steps: list[dict[str, Any]], head: dict[str, Any]) -> None:
        super().__init__()
        if head.get("kind") not in HEADS:
            raise ValueError(f"head kind must be one of {list(HEADS)}, got {head.get('kind')!r}")
        self.arch: dict[str, Any] = {
            "input_shape": [int(s) for s in input_shape], "n_classes": int(n_classes),
            "estimator": str(estimator), "steps": [dict(s) for s in steps], "head": dict(head)}
        self.steps = nn.ModuleList(build_step(s) for s in steps)
        self.head = HEADS[head["kind"]](**{k: v for k, v in head.items() if k != "kind"})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The head's input (N, D'): x flattened, in float64, through the steps."""
        z = x.reshape(len(x), -1).to(torch.float64)
        for step in self.steps:
            z = step(z)
        return z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, K) in the dtype of x (N, ...) in [0, 1], computed in float64."""
        logits = self.head(self.features(x))
        return logits.to(x.dtype) if x.is_floating_point() else logits


def from_sklearn(estimator: Any, input_shape: list[int] | tuple[int, ...] | None = None
                 ) -> SklearnModel:
    """Convert a fitted scikit-learn classifier into a float64, differentiable torch module.

    Args:
        estimator: a fitted estimator of :data:`SUPPORTED` or a ``Pipeline`` of
            StandardScaler / MinMaxScaler / PCA steps ending in one; it was fitted on
            flattened inputs (N, D).
        input_shape: shape of one input (default ``[D]``); inputs (N, *input_shape) are
            flattened to (N, D) before the estimator's steps.

    Returns:
        A module mapping x (N, ...) to logits (N, K); column k is ``estimator.classes_[k]``.

    Raises:
        TypeError: an unsupported estimator or step (the message lists the supported ones).
        ValueError: an unfitted estimator, or ``input_shape`` not of D features.

    Example:
        >>> from sklearn.datasets import load_digits
        >>> from sklearn.svm import SVC
        >>> x, y = load_digits(return_X_y=True)
        >>> svc = SVC().fit(x / 16, y)
        >>> model = from_sklearn(svc, input_shape=(1, 8, 8))
        >>> logits = model(torch.tensor(x[:5] / 16).reshape(5, 1, 8, 8))
        >>> bool((logits.argmax(1).numpy() == svc.predict(x[:5] / 16)).all())
        True
    """
    pre, final = split_pipeline(estimator)
    head = _head(final)
    dim = int(getattr(estimator, "n_features_in_", 0) or 0)
    shape = [int(s) for s in (input_shape if input_shape is not None else [dim])]
    if math.prod(shape) != dim:
        raise ValueError(f"input_shape={shape} has {math.prod(shape)} features; the "
                         f"estimator was fitted on {dim}")
    steps = [step_module(s) for s in pre]
    model = SklearnModel(shape, len(final.classes_), type(final).__name__,
                         [_spec(s) for s in steps], _spec(head))
    model.load_state_dict({**{f"steps.{i}.{k}": v for i, s in enumerate(steps)
                              for k, v in s.state_dict().items()},
                           **{f"head.{k}": v for k, v in head.state_dict().items()}})
    return model.eval()


def classes_of(estimator: Any) -> list[Any]:
    """``classes_`` of the estimator (of a Pipeline's final step), as Python values."""
    return np.asarray(split_pipeline(estimator)[1].classes_).tolist()


def build(arch: Mapping[str, Any], directory: Any = None) -> SklearnModel:
    """An unfitted module from its stored ``arch`` (for ``robustkit.store``)."""
    return SklearnModel(**arch)


def _spec(module: nn.Module) -> dict[str, Any]:
    return cast(dict[str, Any], module.spec)


def _head(est: Any) -> nn.Module:
    from sklearn.utils.validation import check_is_fitted

    name = type(est).__name__
    kind = type(est)
    if not (is_linear(est) or kind in svc_types() | qda_types() | nb_types() | mlp_types()):
        raise TypeError(
            f"cannot convert {name}: supported estimators are {', '.join(SUPPORTED)}, alone "
            f"or after {', '.join(STEP_NAMES)} steps in a Pipeline")
    check_is_fitted(est)
    if len(getattr(est, "classes_", [])) < 2:
        raise ValueError(f"{name} has fewer than two classes")
    if is_linear(est):
        return linear_head(est)
    if kind in svc_types():
        if est.kernel not in KERNELS:
            raise TypeError(f"cannot convert {name} with kernel={est.kernel!r}; supported "
                            f"kernels: {', '.join(KERNELS)}")
        return SVCHead.from_estimator(est)
    if kind in qda_types():
        return QDAHead.from_estimator(est)
    if kind in nb_types():
        return GaussianNBHead.from_estimator(est)
    if est.out_activation_ not in ("softmax", "logistic") or (
            est.out_activation_ == "logistic" and est.coefs_[-1].shape[1] != 1):
        raise TypeError(f"cannot convert a multilabel {name} (output {est.out_activation_})")
    return MLPHead.from_estimator(est)


__all__ = ["SUPPORTED", "SklearnModel", "build", "classes_of", "from_sklearn"]
