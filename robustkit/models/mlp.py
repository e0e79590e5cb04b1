"""Multi-layer perceptron with configurable hidden sizes and activation."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from robustkit.models._torchfit import TRAIN_CHOICES, TRAIN_DEFAULTS, TRAIN_RULES, make_fit
from robustkit.models.inputs import SHAPE_RULES, check_arch, check_input
from robustkit.models.preprocess import Standardize
from robustkit.models.registry import Family, register
from robustkit.params import either, integer, integers

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


class MLP(nn.Module):
    """standardize(x) -> [Linear -> activation] * len(hidden) -> Linear (logits)."""

    def __init__(self, input_shape: list[int], n_classes: int, hidden: list[int],
                 activation: str = "relu") -> None:
        super().__init__()
        check_arch("mlp", {"input_shape": input_shape, "n_classes": n_classes, "hidden": hidden},
                   {**SHAPE_RULES, "hidden": integers(1)})
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got {activation!r}")
        widths = [int(h) for h in hidden]
        self.arch: dict[str, Any] = {"input_shape": list(input_shape), "n_classes": int(n_classes),
                     "hidden": widths, "activation": activation}
        dim = math.prod(input_shape)
        self.standardize = Standardize(dim)
        layers: list[nn.Module] = []
        for h in widths:
            layers += [nn.Linear(dim, h), ACTIVATIONS[activation]()]
            dim = h
        layers.append(nn.Linear(dim, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.arch["input_shape"], "mlp")
        # dtype: the input is cast to the parameters' (float32), gradients flow back in x's
        return self.net(self.standardize(x.to(self.standardize.mean.dtype)))


def _build(x: torch.Tensor, n_classes: int, params: dict) -> MLP:
    hidden = params["hidden"]
    hidden = [hidden] if isinstance(hidden, int) else list(hidden)
    m = MLP(list(x.shape[1:]), n_classes, hidden, params["activation"])
    m.standardize.fit(x)
    return m


register(Family(
    name="mlp",
    defaults={"hidden": (256,), "activation": "relu", **TRAIN_DEFAULTS},
    choices={"activation": tuple(ACTIVATIONS), **TRAIN_CHOICES},
    # hidden: one width or a list of widths ([] is a linear model on standardized inputs)
    rules={**TRAIN_RULES, "hidden": either(integer(1), integers(1))},
    fit=make_fit(_build),
    module=MLP,
    doc="multi-layer perceptron (hidden sizes, relu/sigmoid/tanh)",
))
