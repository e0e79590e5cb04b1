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
import os
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from robustkit.models.outputs import check_output_shape, check_outputs_option, to_logits

BUILDER = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
CONVERT_HINT = ("to convert a torch.save file, load its state_dict in your own code (weights only) "
                "and write it with safetensors.torch.save_file(state_dict, "
                "'weights.safetensors'); see docs/bring-your-own.md")


class TorchModel(nn.Module):
    """Reshape x (N, ...) to (N, *input_shape) and call the user's network.

    Args:
        builder: ``"package.module:function"``; ``function()`` returns the network.
        input_shape: shape of one input.
        n_classes: K, the width of the logits.
        outputs: ``"logits"``, or ``"probabilities"`` for a network ending in a softmax
            (the module then returns their log).
    """

    def __init__(self, builder: str, input_shape: list[int], n_classes: int,
                 outputs: str = "logits") -> None:
        super().__init__()
        self.net = call_builder(builder)
        self.arch: dict[str, Any] = {"builder": builder, "input_shape": list(input_shape),
                                     "n_classes": int(n_classes),
                                     "outputs": check_outputs_option(outputs)}

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """The network's own outputs (logits or probabilities) for x (N, ...)."""
        return self.net(x.reshape(len(x), *self.arch["input_shape"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_logits(self.scores(x), self.arch["outputs"])


def check_builder(builder: str) -> str:
    """``builder`` if it looks like ``package.module:function``, else ValueError."""
    if not isinstance(builder, str) or not BUILDER.match(builder):
        raise ValueError(f"builder={builder!r} must look like 'package.module:function'")
    return builder


def call_builder(builder: str) -> nn.Module:
    """Import ``module:function`` and call it; the result must be an ``nn.Module``.

    Raises:
        ValueError: a malformed path, or a module or function that does not exist.
        TypeError: the builder returned something else than an ``nn.Module``.
    """
    mod_name, fn_name = check_builder(builder).split(":")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import builder {builder!r}: {exc}") from None
    net = fn()
    if not isinstance(net, nn.Module):
        raise TypeError(f"builder {builder!r} returned a {type(net).__name__}, "
                         "not an nn.Module")
    return net


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; ValueError naming the file if it is not one."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (SafetensorError, ValueError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path} is not a safetensors file ({_looks_like(path)}); "
                         f"{CONVERT_HINT}") from None


def _looks_like(path: str | os.PathLike) -> str:
    """What a file that safetensors refused seems to be, from its first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(b"PK"):
        return "it is a zip archive, as torch.save writes"
    if head[:1] == b"\x80":
        return "it is a pickle"
    if len(head) < 8:
        return f"{len(head)} bytes, too short for a header"
    return "its header does not parse: truncated or another format"


def load_weights(model: TorchModel, state: Mapping[str, torch.Tensor], weights: object) -> None:
    """``model.net.load_state_dict(state, strict=True)``, with a one-line error naming the
    file, the builder and the first mismatched key (PyTorch's full list is the cause)."""
    expected = model.net.state_dict()
    # load_state_dict casts silently: integer bits loaded into float weights are garbage.
    kinds = [k for k, v in expected.items() if k in state
             and v.is_floating_point() != state[k].is_floating_point()]
    if kinds:
        k = kinds[0]
        raise ValueError(f"{weights} does not match the network of {model.arch['builder']!r}: "
                         f"tensor {k!r} is {str(state[k].dtype).replace('torch.', '')} in "
                         f"the file, {str(expected[k].dtype).replace('torch.', '')} in the "
                         f"network")
    try:
        model.net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{weights} does not match the network of "
                         f"{model.arch['builder']!r}: {_mismatch(expected, state)}") from exc


def _mismatch(expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor]) -> str:
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    wrong = [k for k in expected if k in got and expected[k].shape != got[k].shape]
    total = len(missing) + len(unexpected) + len(wrong)
    more = f" ({total - 1} more mismatches; --debug shows PyTorch's list)" if total > 1 else ""
    if wrong:
        k = wrong[0]
        first = (f"tensor {k!r} is {tuple(got[k].shape)} in the file, "
                 f"{tuple(expected[k].shape)} in the network")
    elif missing:
        first = f"tensor {missing[0]!r} of the network is missing from the file"
    elif unexpected:
        first = f"the file has tensor {unexpected[0]!r}, which the network does not"
    else:
        first = "the tensors do not load (dtype or storage)"
    return first + more


def from_builder(builder: str, weights: str | os.PathLike,
                 input_shape: list[int] | tuple[int, ...], n_classes: int | None = None,
                 *, outputs: str = "logits",
                 state: Mapping[str, torch.Tensor] | None = None) -> TorchModel:
    """Build the user's network and load safetensors weights into it (``strict=True``).

    Args:
        builder: ``"package.module:function"``.
        weights: a ``.safetensors`` state dict of the network.
        input_shape: shape of one input.
        n_classes: K (default: the width of the network's output on two zero inputs).
        outputs: ``"logits"`` or ``"probabilities"`` (see :class:`TorchModel`).
        state: the tensors of ``weights`` when already read (:func:`read_weights`).

    Raises:
        ValueError: weights that are not safetensors or do not fit the network, or an
            output that is not (N, n_classes).

    Example:
        >>> m = from_builder("mypkg.nets:small_cnn", "w.safetensors", [1, 28, 28])  # doctest: +SKIP
    """
    state = read_weights(weights) if state is None else state
    model = TorchModel(builder, list(input_shape), 0, outputs)
    load_weights(model, state, weights)
    model.eval()
    if n_classes is None:
        dtype = next(iter(model.net.parameters()), torch.empty(0)).dtype
        with torch.no_grad():
            probe = model.scores(torch.zeros(2, *input_shape, dtype=dtype))
        n_classes = check_output_shape(probe, 2, builder)
    model.arch["n_classes"] = int(n_classes)
    return model


def build(arch: Mapping[str, Any], directory: Any = None) -> TorchModel:
    """Rebuild from ``arch`` by importing the builder again (for ``robustkit.store``)."""
    return TorchModel(arch["builder"], list(arch["input_shape"]), int(arch["n_classes"]),
                      str(arch.get("outputs", "logits")))
