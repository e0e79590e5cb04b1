"""Affine front ends of kernel and Gaussian heads, peeled into one float64 map z = A x + a.

Kernel SVMs and Gaussian classifiers often sit behind affine preprocessing: a
``Normalized`` wrapper, ``Standardize``/``PCA`` layers in an ``nn.Sequential``, the
StandardScaler/MinMaxScaler/PCA steps of an imported scikit-learn Pipeline, or the PCA
front end of the ``gmm`` family. :func:`peel` composes them into one affine map of the
flattened input, so a certificate bounds the head over the exact image of the input box
(per-coordinate intervals of an affine map are exact, and gradients pull back through
``A``). A clipping MinMaxScaler is not affine and is refused with a reason.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from robustkit.models.gmm import GaussianMixtureClassifier
from robustkit.models.preprocess import PCA, Normalized, Standardize
from robustkit.models.sklearn import SklearnModel
from robustkit.models.sklearn.pipeline import MinMaxStep, PCAStep, StandardStep

F64 = torch.float64


@dataclass(frozen=True)
class Affine:
    """``z = x @ weight.T + bias`` on flattened x (D,) -> z (d,); ``weight`` None is the
    identity (then d = D)."""

    weight: torch.Tensor | None
    bias: torch.Tensor

    def then(self, weight: torch.Tensor | None, bias: torch.Tensor) -> Affine:
        """This map followed by ``z -> z @ weight.T + bias``."""
        if weight is None:
            return Affine(self.weight, self.bias + bias)
        w = weight if self.weight is None else weight @ self.weight
        return Affine(w, self.bias @ weight.T + bias)

    def box(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact per-coordinate range (lo, hi) of z over the input boxes (B, D)."""
        c, r = (lo + hi) / 2, (hi - lo) / 2
        if self.weight is None:
            return lo + self.bias, hi + self.bias
        zc = c @ self.weight.T + self.bias
        zr = r @ self.weight.abs().T
        return zc - zr, zc + zr

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """z (B, d) of flattened float64 inputs x (B, D)."""
        return x + self.bias if self.weight is None else x @ self.weight.T + self.bias

    def pull(self, gc: torch.Tensor, gr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A gradient enclosure (centre, radius) (..., d) in z pulled back to x (..., D)."""
        if self.weight is None:
            return gc, gr
        return gc @ self.weight, gr @ self.weight.abs()


def _diag(scale: torch.Tensor, shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An elementwise map z = x * scale + shift as a dense (weight, bias)."""
    return torch.diag(scale.to(F64)), shift.to(F64)


def _step(step: nn.Module, dim: int) -> tuple[torch.Tensor | None, torch.Tensor] | str:
    """(weight, bias) of one preprocessing layer, or the reason it is not affine."""
    if isinstance(step, (Standardize, StandardStep)):
        scale = step.scale.to(F64)
        return _diag(1 / scale, -step.mean.to(F64) / scale)
    if isinstance(step, (PCA, PCAStep)):
        comp = step.components.to(F64)
        if isinstance(step, PCAStep) and step.spec["whiten"]:
            comp = comp / step.std.to(F64)[:, None]
        return comp, -(step.mean.to(F64) @ comp.T)
    if isinstance(step, MinMaxStep):
        if step.spec["clip"]:
            return "a clipping MinMaxScaler is not affine"
        return _diag(step.scale, step.offset)
    if isinstance(step, nn.Flatten):
        return None, torch.zeros(dim, dtype=F64)
    return f"{type(step).__name__} is not an affine preprocessing step"


def _normalized(model: Normalized, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = model.mean.to(F64), model.std.to(F64)
    if len(mean) != dim:  # per channel of (C, H, W) inputs, channel-major when flattened
        mean = mean.repeat_interleave(dim // len(mean))
        std = std.repeat_interleave(dim // len(std))
    return _diag(1 / std, -mean / std)


def input_dim(model: nn.Module) -> int | None:
    """Flattened input size D from a model's ``arch`` / ``spec`` (None if unknown)."""
    arch = getattr(model, "arch", None)
    if isinstance(arch, dict) and "input_shape" in arch:
        return math.prod(arch["input_shape"])
    spec = getattr(model, "spec", None)
    if isinstance(spec, dict) and "dim" in spec:
        return int(spec["dim"])
    return None


def peel(model: nn.Module, heads: tuple[type, ...], what: str
         ) -> tuple[Affine, nn.Module] | str:
    """``(front, head)`` with ``model(x) == head(front(x.flatten(1)))``, or a reason.

    The head is the innermost module that is not an affine wrapper; it must be an
    instance of one of ``heads`` (``what`` names them in the reason).
    """
    dim = input_dim(model)
    norm: Normalized | None = None
    layers: list[nn.Module] = []
    while True:
        if isinstance(model, Normalized) and norm is None and not layers:
            norm, model = model, model.model
            dim = dim if dim is not None else input_dim(model)
        elif isinstance(model, nn.Sequential) and len(model) > 0:
            layers += list(model)[:-1]
            model = model[-1]
        elif isinstance(model, SklearnModel):
            layers += list(model.steps)
            dim, model = math.prod(model.arch["input_shape"]), model.head
        else:
            break
    if not isinstance(model, heads):
        return f"{type(model).__name__} is not {what}"
    dim = dim if dim is not None else input_dim(model)
    if dim is None:
        return f"cannot tell the input size of {type(model).__name__}"
    front = Affine(None, torch.zeros(dim, dtype=F64))
    if norm is not None:
        front = front.then(*_normalized(norm, dim))
    for layer in layers:
        step = _step(layer, len(front.bias))
        if isinstance(step, str):
            return step
        front = front.then(*step)
    if isinstance(model, GaussianMixtureClassifier) and model.pca is not None:
        comp = model.pca.components.to(F64)
        front = front.then(comp, -(model.pca.mean.to(F64) @ comp.T))
    return front, model
