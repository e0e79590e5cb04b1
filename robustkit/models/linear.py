"""Linear classifiers: softmax regression, linear SVM (hinge), perceptron."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from robustkit.models._torchfit import TRAIN_CHOICES, TRAIN_DEFAULTS, TRAIN_RULES, make_fit
from robustkit.models.inputs import SHAPE_RULES, check_arch, check_input
from robustkit.models.preprocess import Standardize
from robustkit.models.registry import Family, register

LOSS_OF = {"logistic": "ce", "hinge": "hinge", "perceptron": "perceptron"}


class LinearModel(nn.Module):
    """logits = W standardize(x) + b.

    Args:
        input_shape: shape of one input, e.g. (1, 8, 8).
        n_classes: number of classes K (logits are (N, K), also for K = 2).
    """

    def __init__(self, input_shape: list[int], n_classes: int) -> None:
        super().__init__()
        check_arch("linear", {"input_shape": input_shape, "n_classes": n_classes}, SHAPE_RULES)
        self.arch: dict[str, Any] = {"input_shape": list(input_shape), "n_classes": int(n_classes)}
        dim = math.prod(input_shape)
        self.standardize = Standardize(dim)
        self.linear = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.arch["input_shape"], "linear")
        # dtype: the input is cast to the parameters' (float32), gradients flow back in x's
        return self.linear(self.standardize(x.to(self.linear.weight.dtype)))


def _build(x: torch.Tensor, n_classes: int, params: dict) -> LinearModel:
    m = LinearModel(list(x.shape[1:]), n_classes)
    m.standardize.fit(x)
    return m


register(Family(
    name="linear",
    defaults={"loss": "logistic", **TRAIN_DEFAULTS, "epochs": 40, "lr": 1e-2,
              "weight_decay": 1e-4},
    choices={"loss": tuple(LOSS_OF), **TRAIN_CHOICES},
    rules=TRAIN_RULES,
    fit=make_fit(_build, loss=lambda p: LOSS_OF[p["loss"]]),
    module=LinearModel,
    doc="linear classifier: loss logistic (softmax regression), hinge (linear SVM), perceptron",
))
