"""Linear scikit-learn classifiers: one affine map ``x @ coef_.T + intercept_``.

Covers every estimator whose ``decision_function`` is that map and whose ``predict`` is its
argmax (or, with two classes, its sign): ``LogisticRegression`` (multinomial, and binary),
``LinearSVC``, ``SGDClassifier``, ``Perceptron``, ``RidgeClassifier``,
``LinearDiscriminantAnalysis``, and ``OneVsRestClassifier`` over any of them (one-vs-rest
logistic regression in scikit-learn >= 1.7, where ``multi_class="ovr"`` is gone).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

LINEAR_NAMES = ("LogisticRegression", "LinearSVC", "SGDClassifier", "Perceptron",
                "RidgeClassifier", "LinearDiscriminantAnalysis")


class LinearHead(nn.Module):
    """Scores ``s = x @ weight.T + bias``; with one row (two classes) logits ``[-s/2, s/2]``.

    The binary logits differ by ``s`` (``logits[:, 1] - logits[:, 0]`` is the estimator's
    decision function) and their softmax is ``[1 - sigmoid(s), sigmoid(s)]``, which is
    ``predict_proba`` for binary logistic regression. ``argmax`` breaks a tie ``s == 0``
    towards class 0, as ``predict`` does (``s > 0`` means ``classes_[1]``).

    Args:
        dim: number of input features D.
        n_out: rows of ``coef_``: K classes, or 1 for a two-class estimator.
    """

    weight: torch.Tensor
    bias: torch.Tensor

    def __init__(self, dim: int, n_out: int) -> None:
        super().__init__()
        self.spec: dict[str, Any] = {"kind": "linear", "dim": int(dim), "n_out": int(n_out)}
        self.register_buffer("weight", torch.zeros(n_out, dim, dtype=torch.float64))
        self.register_buffer("bias", torch.zeros(n_out, dtype=torch.float64))

    @classmethod
    @torch.no_grad()
    def from_coef(cls, coef: Any, intercept: Any) -> LinearHead:
        coef = np.atleast_2d(np.asarray(coef, dtype=np.float64))
        bias = np.broadcast_to(np.asarray(intercept, dtype=np.float64), (coef.shape[0],))
        head = cls(coef.shape[1], coef.shape[0])
        head.weight.copy_(torch.tensor(coef))
        head.bias.copy_(torch.tensor(np.ascontiguousarray(bias)))
        return head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x @ self.weight.T + self.bias
        if s.shape[1] == 1:
            return torch.cat([-s / 2, s / 2], dim=1)
        return s


def is_linear(est: Any) -> bool:
    """Whether ``est`` is one of ``LINEAR_NAMES`` (exact type) or a OneVsRest over them."""
    if _is_ovr(est):
        return all(type(e) in _linear_types() for e in est.estimators_)
    return type(est) in _linear_types()


def linear_head(est: Any) -> LinearHead:
    """The head of a fitted linear classifier (see :func:`is_linear`)."""
    if not _is_ovr(est):
        return LinearHead.from_coef(est.coef_, est.intercept_)
    # Each binary estimator scores its class against the rest with its decision function.
    coef = np.concatenate([np.atleast_2d(e.coef_) for e in est.estimators_])
    bias = np.concatenate([np.ravel(e.intercept_) for e in est.estimators_])
    return LinearHead.from_coef(coef, bias)


def _is_ovr(est: Any) -> bool:
    from sklearn.multiclass import OneVsRestClassifier

    return type(est) is OneVsRestClassifier


def _linear_types() -> set[type]:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import (
        LogisticRegression,
        Perceptron,
        RidgeClassifier,
        SGDClassifier,
    )
    from sklearn.svm import LinearSVC

    return {LogisticRegression, LinearSVC, SGDClassifier, Perceptron, RidgeClassifier,
            LinearDiscriminantAnalysis}
