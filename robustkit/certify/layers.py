"""A model as a chain of affine maps and ReLUs: what the linear, IBP, CROWN and MILP
certificates read.

``ops_of(model)`` walks a model into a list of ops: :class:`Affine` (an affine map given
as two callables, ``fn(x) = W x + b`` and ``abs_fn(r) = |W| r``, so that convolutions stay
convolutions and gradients reach the parameters: IBP training uses the same ops) and the
string ``"relu"``. It knows nn.Sequential, Linear, Conv2d, AvgPool2d, eval-mode BatchNorm,
Flatten, Identity, Dropout (eval), ReLU, robustkit's MLP, CNN, LinearModel, linear-kernel
KernelSVM, the preprocessing layers (Standardize, PCA, Normalized), imported TorchModel /
OnnxModel made of those, and SklearnModel with a linear or ReLU-MLP head after
StandardScaler / MinMaxScaler (no clip) / PCA steps. Anything else raises
:class:`Unsupported` naming the layer. :func:`robustkit.certify.dense.network` folds the
chain into dense matrices for CROWN, MILP and the linear certificate.

The chain's output may differ from the model's logits by a per-sample shift (scikit-learn
MLP heads return log-probabilities: the chain stops before the log-softmax) but never in
the differences ``logit_y - logit_j`` that decide the prediction, which is all a
certificate reads.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustkit.models.cnn import CNN
from robustkit.models.linear import LinearModel
from robustkit.models.mlp import MLP
from robustkit.models.onnx_model import OnnxModel
from robustkit.models.preprocess import PCA, Normalized, Standardize
from robustkit.models.sklearn import SklearnModel
from robustkit.models.sklearn.linear import LinearHead
from robustkit.models.sklearn.mlp import MLPHead
from robustkit.models.sklearn.pipeline import MinMaxStep, PCAStep, StandardStep
from robustkit.models.svm import KernelSVM
from robustkit.models.torch_model import TorchModel

Tensor = torch.Tensor


class Unsupported(ValueError):
    """The model holds a layer the certificates cannot read (the message names it)."""


@dataclass(frozen=True)
class Affine:
    """``fn(x) = W x + b`` and ``abs_fn(r) = |W| r`` over a batch (dim 0), in x's dtype."""

    fn: Callable[[Tensor], Tensor]
    abs_fn: Callable[[Tensor], Tensor]
    name: str


Op = Affine | str  # "relu" for a ReLU


def _p(t: Tensor | None, like: Tensor) -> Tensor | None:
    return None if t is None else t.to(like.dtype)


def _linear(w: Tensor, b: Tensor | None, name: str) -> Affine:
    return Affine(lambda x: F.linear(x, _p(w, x), _p(b, x)),  # type: ignore[arg-type]
                  lambda r: F.linear(r, w.abs().to(r.dtype)), name)


def _diag(scale: Tensor, shift: Tensor, name: str, channel: bool = False) -> Affine:
    """x * scale + shift per feature, or per channel (dim 1) when ``channel``."""

    def shaped(t: Tensor, x: Tensor) -> Tensor:
        return t.to(x.dtype).reshape((1, -1) + (1,) * (x.dim() - 2)) if channel else \
            t.to(x.dtype)

    return Affine(lambda x: x * shaped(scale, x) + shaped(shift, x),
                  lambda r: r * shaped(scale.abs(), r), name)


def _same(fn: Callable[[Tensor], Tensor], name: str) -> Affine:
    """A linear map with non-negative weights and no bias (flatten, average pooling)."""
    return Affine(fn, fn, name)


def _conv(m: nn.Conv2d) -> Affine:
    if m.padding_mode != "zeros":
        raise Unsupported(f"Conv2d with padding_mode={m.padding_mode!r}")
    kw: dict[str, Any] = {"stride": m.stride, "padding": m.padding, "dilation": m.dilation, "groups": m.groups}
    return Affine(lambda x: F.conv2d(x, _p(m.weight, x), _p(m.bias, x), **kw),  # type: ignore
                  lambda r: F.conv2d(r, m.weight.abs().to(r.dtype), None, **kw), "Conv2d")


def _batchnorm(m: nn.modules.batchnorm._BatchNorm) -> Affine:
    if m.training or m.running_mean is None or m.running_var is None:
        raise Unsupported(f"{type(m).__name__} in training mode or without running "
                          "statistics (certificates need eval mode)")
    scale = torch.rsqrt(m.running_var.double() + m.eps)
    if m.weight is not None:
        scale = scale * m.weight.double()
    shift = -m.running_mean.double() * scale
    if m.bias is not None:
        shift = shift + m.bias.double()
    return _diag(scale, shift, type(m).__name__, channel=True)


def _flat_affine(fn: Callable[[Tensor], Tensor], w_abs: Tensor, name: str) -> Affine:
    """An affine map of the flattened input whose |linear part| is ``r @ w_abs``."""
    return Affine(lambda x: fn(x.flatten(1)), lambda r: r.flatten(1) @ w_abs.to(r.dtype), name)


def _standardize(m: Standardize) -> Affine:
    scale = 1.0 / m.scale.double()
    return _flat_affine(lambda x: (x - m.mean.to(x.dtype)) * scale.to(x.dtype),
                        torch.diag(scale), "Standardize")


def _pca(m: PCA | PCAStep) -> Affine:
    comp = m.components.double()
    if isinstance(m, PCAStep) and m.spec["whiten"]:
        comp = comp / m.std.double()[:, None]
    mean = m.mean.double()
    return _flat_affine(lambda x: (x - mean.to(x.dtype)) @ comp.T.to(x.dtype),
                        comp.abs().T, type(m).__name__)


def _reshape(shape: list[int]) -> Affine:
    return _same(lambda x: x.reshape(len(x), *shape), "reshape")


def _sklearn(m: SklearnModel) -> list[Op]:
    ops: list[Op] = [_same(lambda x: x.flatten(1), "flatten")]
    for step in m.steps:
        if isinstance(step, StandardStep):
            ops.append(_diag(1.0 / step.scale.double(), -step.mean.double() / step.scale.double(),
                             "StandardScaler"))
        elif isinstance(step, MinMaxStep) and not step.spec["clip"]:
            ops.append(_diag(step.scale.double(), step.offset.double(), "MinMaxScaler"))
        elif isinstance(step, PCAStep):
            ops.append(_pca(step))
        else:
            spec = dict(getattr(step, "spec", {}))
            raise Unsupported(f"scikit-learn step {spec.get('kind')!r} "
                              f"(clip={spec.get('clip')})")
    head = m.head
    if isinstance(head, LinearHead):
        return ops + [_binary(_linear(head.weight.double(), head.bias.double(), "linear head"))
                      if head.weight.shape[0] == 1 else
                      _linear(head.weight.double(), head.bias.double(), "linear head")]
    if isinstance(head, MLPHead) and head.spec["activation"] in ("relu", "identity"):
        n = len(head.spec["sizes"]) - 1
        for layer in range(n):
            w, b = getattr(head, f"w{layer}").double().T, getattr(head, f"b{layer}").double()
            dense = _linear(w, b, "MLPClassifier layer")
            ops.append(_binary(dense) if layer == n - 1 and w.shape[0] == 1 else dense)
            if layer < n - 1 and head.spec["activation"] == "relu":
                ops.append("relu")
        return ops
    spec = dict(getattr(head, "spec", {}))
    raise Unsupported(f"scikit-learn head {type(head).__name__} "
                      f"({spec.get('activation', spec.get('kind'))})")


def _binary(op: Affine) -> Affine:
    """One score s -> logits (-s/2, s/2): the same margin as the two-class heads."""
    return Affine(lambda x: torch.cat([-op.fn(x) / 2, op.fn(x) / 2], 1),
                  lambda r: torch.cat([op.abs_fn(r) / 2, op.abs_fn(r) / 2], 1), op.name)


def _onnx(m: OnnxModel) -> list[Op]:
    """An onnx2torch graph whose nodes form one chain of supported modules."""
    graph = getattr(m.net, "graph", None)
    if graph is None:
        raise Unsupported(f"ONNX net {type(m.net).__name__} without an fx graph")
    ops: list[Op] = [_reshape(m.arch["input_shape"])]
    prev = None
    for node in graph.nodes:
        if node.op == "placeholder":
            prev = node
        elif node.op == "call_module" and len(node.args) == 1 and node.args[0] is prev:
            ops += ops_of(m.net.get_submodule(str(node.target)))
            prev = node
        elif node.op != "output":
            raise Unsupported(f"ONNX node {node.op} {node.target} (only a chain of "
                              "supported layers is read)")
    return ops


def _svm(m: KernelSVM) -> list[Op]:
    if m.arch["kernel"] != "linear":
        raise Unsupported(f"KernelSVM with kernel={m.arch['kernel']!r} (not affine)")
    w = (m.support_vectors.double().T @ m.dual_coef.double()).T
    return [_same(lambda x: x.flatten(1), "flatten"), _linear(w, m.intercept.double(), "svm")]


READERS: dict[type, Callable[[Any], list[Op]]] = {
    nn.Sequential: lambda m: [op for c in m.children() for op in ops_of(c)],
    nn.Linear: lambda m: [_linear(m.weight, m.bias, "Linear")],
    nn.Conv2d: lambda m: [_conv(m)],
    nn.ReLU: lambda m: ["relu"],
    nn.Flatten: lambda m: [_same(m, "Flatten")],
    nn.AvgPool2d: lambda m: [_same(m, "AvgPool2d")],
    nn.AdaptiveAvgPool2d: lambda m: [_same(m, "AdaptiveAvgPool2d")],
    nn.BatchNorm1d: lambda m: [_batchnorm(m)],
    nn.BatchNorm2d: lambda m: [_batchnorm(m)],
    nn.Identity: lambda m: [],
    nn.Dropout: lambda m: _dropout(m),
    Standardize: lambda m: [_standardize(m)],
    PCA: lambda m: [_pca(m)],
    Normalized: lambda m: [_diag(1.0 / m.std.double(), -m.mean.double() / m.std.double(),
                                 "Normalized", channel=True)] + ops_of(m.model),
    MLP: lambda m: [_standardize(m.standardize)] + ops_of(m.net),
    CNN: lambda m: ops_of(m.features) + ops_of(m.head),
    LinearModel: lambda m: [_standardize(m.standardize), _linear(m.linear.weight,
                                                                 m.linear.bias, "Linear")],
    KernelSVM: _svm,
    TorchModel: lambda m: [_reshape(m.arch["input_shape"])] + ops_of(m.net),
    OnnxModel: _onnx,
    SklearnModel: _sklearn,
}


def _dropout(m: nn.Module) -> list[Op]:
    if m.training:
        raise Unsupported("Dropout in training mode")
    return []


def ops_of(model: nn.Module) -> list[Op]:
    """The model as a list of :class:`Affine` ops and ``"relu"`` (see the module doc).

    Raises:
        Unsupported: a layer that is neither affine nor a ReLU, or one not known.
    """
    reader = READERS.get(type(model))
    if reader is None:
        raise Unsupported(f"layer {type(model).__name__} (supported: "
                          f"{', '.join(sorted(t.__name__ for t in READERS))})")
    return reader(model)


def reason(model: nn.Module, *, affine: bool = False) -> str | None:
    """None when ``ops_of(model)`` reads the model (with ``affine``: and it has no ReLU),
    else why not."""
    try:
        ops = ops_of(model)
    except Unsupported as exc:
        return f"cannot read {exc}"
    if affine and "relu" in ops:
        return "not affine (it has ReLU layers)"
    return None


def run(ops: list[Op], x: Tensor) -> Tensor:
    """Apply the chain to x (the model's margins, see the module doc)."""
    for op in ops:
        x = torch.relu(x) if op == "relu" else op.fn(x)  # type: ignore[union-attr]
    return x
