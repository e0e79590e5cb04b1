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

from robustkit.models.outputs import check_output_shape, check_outputs_option, to_logits
from robustkit.tensorfiles import atomic_write

GRAPH_FILE = "model.onnx"


class OnnxModel(nn.Module):
    """Reshape x (N, ...) to (N, *graph_shape), cast to the graph's dtype, run the graph.

    Args:
        net: the onnx2torch module of the graph.
        input_shape: shape of one input the model takes (the dataset's).
        n_classes: K, the width of the graph's first output (the logits).
        sha256: hex SHA-256 of the ONNX bytes.
        outputs: ``"logits"``, or ``"probabilities"`` for a graph ending in a softmax (the
            module then returns their log).
    """

    def __init__(self, net: nn.Module, input_shape: list[int], n_classes: int,
                 sha256: str, graph: bytes = b"", outputs: str = "logits",
                 graph_shape: list[int] | None = None) -> None:
        super().__init__()
        self.net = net
        self.graph = graph
        self.arch: dict[str, Any] = {"input_shape": [int(s) for s in input_shape],
                                     "n_classes": int(n_classes), "graph_file": GRAPH_FILE,
                                     "graph_sha256": sha256,
                                     "outputs": check_outputs_option(outputs)}
        # The graph's own input shape when it differs (a flat graph on image inputs).
        if graph_shape is not None and list(graph_shape) != list(input_shape):
            self.arch["graph_shape"] = [int(s) for s in graph_shape]

    @property
    def graph_shape(self) -> list[int]:
        """The shape (without the batch axis) the graph takes."""
        return list(self.arch.get("graph_shape", self.arch["input_shape"]))

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """The graph's own first output (logits or probabilities) for x (N, ...)."""
        dtype = next(iter(self.net.parameters()), torch.empty(0)).dtype
        out = self.net(x.reshape(len(x), *self.graph_shape).to(dtype))
        return out[0] if isinstance(out, (tuple, list)) else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_logits(self.scores(x), self.arch["outputs"])


def from_onnx(data: bytes, input_shape: list[int] | tuple[int, ...], *,
              outputs: str = "logits") -> OnnxModel:
    """Convert ONNX bytes into an :class:`OnnxModel` for inputs of ``input_shape``.

    Raises:
        ValueError: the graph does not parse or convert, does not take exactly one input,
            its input does not take ``input_shape`` (shown with the graph's own input
            shape), or its output is not (N, n_classes).
    """
    import onnx
    from onnx2torch import convert

    try:
        proto = onnx.load_from_string(data)
    except Exception as exc:  # noqa: BLE001 (onnx raises many types on bad bytes)
        raise ValueError(f"cannot convert the ONNX graph: {_one_line(exc)}") from None
    names = graph_inputs(proto)
    if len(names) != 1:
        raise ValueError(f"the ONNX graph must take exactly one input (the images or "
                         f"features); it takes {len(names)}: "
                         f"{', '.join(repr(n) for n in names) or 'none'}")
    batch = graph_batch(proto)
    if batch > 0:
        raise ValueError(f"the ONNX graph's input {names[0]!r} has a fixed batch size of "
                         f"{batch}; attacks run batches of any size: export it with a "
                         f"dynamic batch axis (torch.onnx.export(..., dynamic_axes="
                         f"{{{names[0]!r}: {{0: 'n'}}}}))")
    try:
        net = convert(proto)
    except Exception as exc:  # noqa: BLE001 (onnx2torch raises many types on bad graphs)
        raise ValueError(f"cannot convert the ONNX graph: {_one_line(exc)}") from None
    graph_shape = graph_input_shape(proto)
    if graph_shape and all(d > 0 for d in graph_shape) and \
            math.prod(graph_shape) != math.prod(input_shape):
        raise ValueError(f"the ONNX graph takes inputs of shape {graph_shape}, "
                         f"the dataset's are {list(input_shape)}")
    shape = graph_shape if graph_shape and all(d > 0 for d in graph_shape) else input_shape
    sha = hashlib.sha256(data).hexdigest()
    model = OnnxModel(net.eval(), list(input_shape), 0, sha, data, outputs,
                      list(shape)).eval()
    try:
        with torch.no_grad():
            probe = model.scores(torch.zeros(2, *shape))
    except Exception as exc:  # noqa: BLE001 (converted ops raise many types)
        raise ValueError(f"the converted ONNX graph does not run on a batch of 2 inputs "
                         f"of shape {list(shape)}: {_one_line(exc)}") from None
    model.arch["n_classes"] = check_output_shape(probe, 2, "the ONNX graph")
    return model


def graph_inputs(proto: Any) -> list[str]:
    """The names of the graph's inputs that are not initializers (weights)."""
    weights = {t.name for t in proto.graph.initializer}
    return [i.name for i in proto.graph.input if i.name not in weights]


def _input_dims(proto: Any) -> list[int]:
    name = graph_inputs(proto)[0]
    entry = next(i for i in proto.graph.input if i.name == name)
    return [int(d.dim_value) for d in entry.type.tensor_type.shape.dim]


def graph_input_shape(proto: Any) -> list[int]:
    """The data input's shape without the batch axis (0 for a symbolic dimension)."""
    return _input_dims(proto)[1:]


def graph_batch(proto: Any) -> int:
    """The data input's batch size when the graph fixes it, else 0 (symbolic)."""
    return (_input_dims(proto) or [0])[0]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def check_onnxruntime(model: OnnxModel, x: torch.Tensor) -> float:
    """Max abs difference between ``model`` and onnxruntime on x (N, ...) in [0, 1]."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model.graph, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    feed = x.reshape(len(x), *model.graph_shape).float().numpy()
    ref = sess.run(None, {name: feed})[0]
    with torch.no_grad():
        got = model.scores(x).double().numpy()
    return float(np.abs(got - ref).max())


def save_onnx(model: OnnxModel, directory: str | os.PathLike) -> Path:
    """Write the graph bytes as ``<directory>/model.onnx`` (atomically)."""
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
    model = from_onnx(data, arch["input_shape"], outputs=str(arch.get("outputs", "logits")))
    if model.arch["n_classes"] != arch.get("n_classes"):
        raise ValueError("the ONNX graph's output width does not match model.json")
    return model
