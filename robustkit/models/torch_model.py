"""Networks from the user's own code: an importable builder plus safetensors weights.

``robustkit import torch MODULE:FUNCTION WEIGHTS.safetensors`` calls ``FUNCTION()`` from
``MODULE`` (which must be importable, e.g. on ``PYTHONPATH``) to build the network, and
loads the weights with ``strict=True`` from a safetensors file. The store keeps the
builder's import path in ``model.json`` and the weights in ``model.safetensors``; loading
imports that module again. This runs the user's own code, which is the point; no file
content is ever unpickled.
"""
from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

BUILDER = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class TorchModel(nn.Module):
    """Reshape x (N, ...) to (N, *input_shape) and call the user's network.

    Args:
        builder: ``"package.module:function"``; ``function()`` returns the network.
        input_shape: shape of one input.
        n_classes: K, the width of the logits.
    """

    def __init__(self, builder: str, input_shape: list[int], n_classes: int) -> None:
        super().__init__()
        self.net = call_builder(builder)
        self.arch: dict[str, Any] = {"builder": builder, "input_shape": list(input_shape),
                                     "n_classes": int(n_classes)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(len(x), *self.arch["input_shape"]))


def call_builder(builder: str) -> nn.Module:
    """Import ``module:function`` and call it; the result must be an ``nn.Module``.

    Raises:
        ValueError: a malformed path, or a module or function that does not exist.
        TypeError: the builder returned something else than an ``nn.Module``.
    """
    if not isinstance(builder, str) or not BUILDER.match(builder):
        raise ValueError(f"builder={builder!r} must look like 'package.module:function'")
    mod_name, fn_name = builder.split(":")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import builder {builder!r}: {exc}") from None
    net = fn()
    if not isinstance(net, nn.Module):
        raise TypeError(f"builder {builder!r} returned a {type(net).__name__}, "
                         "not an nn.Module")
    return net


def from_builder(builder: str, weights: str, input_shape: list[int] | tuple[int, ...],
                 n_classes: int | None = None) -> TorchModel:
    """Build the user's network and load safetensors weights into it (``strict=True``).

    Args:
        builder: ``"package.module:function"``.
        weights: a ``.safetensors`` state dict of the network.
        input_shape: shape of one input.
        n_classes: K (default: the width of the network's output on one zero input).

    Example:
        >>> m = from_builder("mypkg.nets:small_cnn", "w.safetensors", [1, 28, 28])  # doctest: +SKIP
    """
    from safetensors.torch import load_file

    model = TorchModel(builder, list(input_shape), 0)
    state = load_file(weights)
    try:
        model.net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{weights} does not match the network of {builder!r}: {exc}") from None
    model.eval()
    if n_classes is None:
        with torch.no_grad():
            dtype = next(iter(model.net.parameters()), torch.empty(0)).dtype
            n_classes = int(model(torch.zeros(1, *input_shape, dtype=dtype)).shape[-1])
    model.arch["n_classes"] = int(n_classes)
    return model


def build(arch: Mapping[str, Any], directory: Any = None) -> TorchModel:
    """Rebuild from ``arch`` by importing the builder again (for ``robustkit.store``)."""
    return TorchModel(arch["builder"], list(arch["input_shape"]), int(arch["n_classes"]))
