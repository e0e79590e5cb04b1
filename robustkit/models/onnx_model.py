"""ONNX graphs as torch modules (onnx2torch), checked against onnxruntime.

An ONNX file is protobuf: reading it runs no code. :func:`from_onnx` converts the graph
with onnx2torch into an ``nn.Module`` (differentiable with respect to the input) and keeps
the graph's bytes; :func:`save_onnx` writes the graph as ``model.onnx`` beside the store's
``model.safetensors`` + ``model.json``, whose ``arch`` records its SHA-256. Loading
re-reads the graph, checks the hash, converts it again and loads the stored tensors.
"""
from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

GRAPH_FILE = "model.onnx"


class OnnxModel(nn.Module):
    """Reshape x (N, ...) to (N, *input_shape), cast to the graph's dtype, run the graph.

    Args:
        net: the onnx2torch module of the graph.
        input_shape: shape of one input the graph expects (without the batch axis).
        n_classes: K, the width of the graph's first output (the logits).
        sha256: hex SHA-256 of the ONNX bytes.
    """

    def __init__(self, net: nn.Module, input_shape: list[int], n_classes: int,
                 sha256: str, graph: bytes = b"") -> None:
        super().__init__()
        self.net = net
        self.graph = graph
        self.arch: dict[str, Any] = {"input_shape": [int(s) for s in input_shape],
                                     "n_classes": int(n_classes), "graph_file": GRAPH_FILE,
                                     "graph_sha256": sha256}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = next(iter(self.net.parameters()), torch.empty(0)).dtype
        out = self.net(x.reshape(len(x), *self.arch["input_shape"]).to(dtype))
        return out[0] if isinstance(out, (tuple, list)) else out


def from_onnx(data: bytes, input_shape: list[int] | tuple[int, ...]) -> OnnxModel:
    """Convert ONNX bytes into an :class:`OnnxModel` for inputs of ``input_shape``.

    Raises:
        ValueError: the graph does not parse, does not convert, or its input does not take
            ``input_shape`` (shown with the graph's own input shape).
    """
    import onnx
    from onnx2torch import convert

    try:
        proto = onnx.load_from_string(data)
        net = convert(proto)
    except Exception as exc:  # noqa: BLE001 (onnx/onnx2torch raise many types on bad graphs)
        raise ValueError(f"cannot convert the ONNX graph: {exc}") from None
    graph_shape = graph_input_shape(proto)
    if graph_shape and all(d > 0 for d in graph_shape) and \
            math.prod(graph_shape) != math.prod(input_shape):
        raise ValueError(f"the ONNX graph takes inputs of shape {graph_shape}, "
                         f"the dataset's are {list(input_shape)}")
    shape = graph_shape if graph_shape and all(d > 0 for d in graph_shape) else input_shape
    net.eval()
    with torch.no_grad():
        probe = net(torch.zeros(1, *shape))
    probe = probe[0] if isinstance(probe, (tuple, list)) else probe
    sha = hashlib.sha256(data).hexdigest()
    return OnnxModel(net, list(shape), int(probe.shape[-1]), sha, data).eval()


def graph_input_shape(proto: Any) -> list[int]:
    """The first graph input's shape without the batch axis (0 for a symbolic dimension)."""
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    return [int(d.dim_value) for d in list(dims)[1:]]


def check_onnxruntime(model: OnnxModel, x: torch.Tensor) -> float:
    """Max abs difference between ``model`` and onnxruntime on x (N, ...) in [0, 1]."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model.graph, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    feed = x.reshape(len(x), *model.arch["input_shape"]).float().numpy()
    ref = sess.run(None, {name: feed})[0]
    with torch.no_grad():
        got = model(x).double().numpy()
    return float(np.abs(got - ref).max())


def save_onnx(model: OnnxModel, directory: str | os.PathLike) -> Path:
    """Write the graph bytes as ``<directory>/model.onnx`` (atomically)."""
    from robustkit.tensorfiles import atomic_write

    path = Path(directory) / GRAPH_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, model.graph)
    return path


def build(arch: Mapping[str, Any], directory: Any) -> OnnxModel:
    """Rebuild from the stored graph after checking its SHA-256 (for ``robustkit.store``)."""
    if directory is None:
        raise ValueError("an ONNX model is rebuilt from its folder; none was given")
    name = str(arch.get("graph_file", GRAPH_FILE))
    if Path(name).name != name:
        raise ValueError(f"graph_file={name!r} must be a plain file name")
    data = (Path(directory) / name).read_bytes()
    if hashlib.sha256(data).hexdigest() != arch.get("graph_sha256"):
        raise ValueError(f"{Path(directory) / name}: SHA-256 does not match model.json")
    model = from_onnx(data, arch["input_shape"])
    if model.arch["n_classes"] != arch.get("n_classes"):
        raise ValueError("the ONNX graph's output width does not match model.json")
    return model
