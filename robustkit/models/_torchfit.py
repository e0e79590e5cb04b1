"""Shared glue for the gradient-trained families (linear, mlp, cnn, resnet18)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from robustkit.models.training import FitConfig, fit_torch, seeded
from robustkit.params import Rule, integer, number, positive

# Training parameters every gradient-trained family accepts.
TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 30,
    "lr": 1e-3,
    "batch_size": 64,
    "weight_decay": 0.0,
    "optimizer": "adam",
    "schedule": "constant",
}
TRAIN_RULES: dict[str, Rule] = {
    "epochs": integer(1), "lr": positive(), "batch_size": integer(1),
    "weight_decay": number(0),
}
TRAIN_CHOICES: dict[str, tuple] = {
    "optimizer": ("adam", "sgd"),
    "schedule": ("constant", "cyclic", "cosine"),
}


def fit_config(params: dict[str, Any], loss: str = "ce") -> FitConfig:
    return FitConfig(
        epochs=int(params["epochs"]), lr=float(params["lr"]),
        batch_size=int(params["batch_size"]), weight_decay=float(params["weight_decay"]),
        optimizer=params["optimizer"], schedule=params["schedule"], loss=loss,
    )


def make_fit(build: Callable[[torch.Tensor, int, dict], nn.Module],
             loss: Callable[[dict], str] = lambda p: "ce") -> Callable[..., nn.Module]:
    """A family ``fit`` from a ``build(x, n_classes, params)`` that returns an initialized
    module (with its preprocessing fitted on x): seeded init, then ``fit_torch``."""

    def fit(x: torch.Tensor, y: torch.Tensor, *, n_classes: int, params: dict, seed: int,
            device: torch.device, progress: bool) -> nn.Module:
        with seeded(seed):
            module = build(x, n_classes, params)
        return fit_torch(module, x, y, fit_config(params, loss(params)), seed=seed,
                         device=device, progress=progress)

    return fit
