"""Preprocessing steps of a scikit-learn ``Pipeline``: StandardScaler, MinMaxScaler, PCA.

Each step is a small float64 module holding the fitted numbers as buffers and its
constructor arguments in ``spec`` (JSON), so that the store can rebuild it.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


def _t(a: Any) -> torch.Tensor:
    return torch.tensor(np.asarray(a, dtype=np.float64))


class StandardStep(nn.Module):
    """``(x - mean_) / scale_`` as ``StandardScaler`` (either part may be switched off)."""

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.spec: dict[str, Any] = {"kind": "standard", "dim": int(dim)}
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("scale", torch.ones(dim, dtype=torch.float64))

    @classmethod
    @torch.no_grad()
    def from_estimator(cls, est: Any) -> StandardStep:
        step = cls(int(est.n_features_in_))
        # mean_ is computed even with with_mean=False; only the flags say what transform uses.
        if est.with_mean and est.mean_ is not None:
            step.mean.copy_(_t(est.mean_))
        if est.with_std and est.scale_ is not None:
            step.scale.copy_(_t(est.scale_))
        return step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale


class MinMaxStep(nn.Module):
    """``x * scale_ + min_`` as ``MinMaxScaler``, clipped to ``feature_range`` if ``clip``."""

    scale: torch.Tensor
    offset: torch.Tensor

    def __init__(self, dim: int, clip: bool = False, low: float = 0.0,
                 high: float = 1.0) -> None:
        super().__init__()
        self.spec: dict[str, Any] = {"kind": "minmax", "dim": int(dim), "clip": bool(clip),
                                     "low": float(low), "high": float(high)}
        self.register_buffer("scale", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("offset", torch.zeros(dim, dtype=torch.float64))

    @classmethod
    @torch.no_grad()
    def from_estimator(cls, est: Any) -> MinMaxStep:
        low, high = est.feature_range
        step = cls(int(est.n_features_in_), bool(est.clip), float(low), float(high))
        step.scale.copy_(_t(est.scale_))
        step.offset.copy_(_t(est.min_))
        return step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x * self.scale + self.offset
        if self.spec["clip"]:
            out = out.clamp(self.spec["low"], self.spec["high"])
        return out


class PCAStep(nn.Module):
    """``x @ components_.T - mean_ @ components_.T``, divided by ``sqrt(explained_variance_)``
    when ``whiten`` (as ``PCA.transform``)."""

    mean: torch.Tensor
    components: torch.Tensor
    std: torch.Tensor

    def __init__(self, dim: int, k: int, whiten: bool = False) -> None:
        super().__init__()
        self.spec: dict[str, Any] = {"kind": "pca", "dim": int(dim), "k": int(k),
                                     "whiten": bool(whiten)}
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("components", torch.zeros(k, dim, dtype=torch.float64))
        self.register_buffer("std", torch.ones(k, dtype=torch.float64))

    @classmethod
    @torch.no_grad()
    def from_estimator(cls, est: Any) -> PCAStep:
        comp = np.asarray(est.components_)
        step = cls(comp.shape[1], comp.shape[0], bool(est.whiten))
        step.mean.copy_(_t(est.mean_))
        step.components.copy_(_t(comp))
        if est.whiten:
            step.std.copy_(_t(np.sqrt(est.explained_variance_)))
        return step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x @ self.components.T - self.mean @ self.components.T
        return out / self.std if self.spec["whiten"] else out


STEP_NAMES = ("StandardScaler", "MinMaxScaler", "PCA")
STEP_KINDS: dict[str, type[nn.Module]] = {"standard": StandardStep, "minmax": MinMaxStep,
                                          "pca": PCAStep}


def split_pipeline(est: Any) -> tuple[list[Any], Any]:
    """``(preprocessing steps, final estimator)`` of a Pipeline (``([], est)`` otherwise).

    Raises:
        TypeError: a step that is not one of ``STEP_NAMES`` (``"passthrough"`` steps are skipped).
    """
    from sklearn.pipeline import Pipeline

    if type(est) is not Pipeline:
        return [], est
    fitted = [s for _, s in est.steps if s is not None and s != "passthrough"]
    if not fitted:
        raise TypeError("the Pipeline has no estimator")
    *pre, final = fitted
    for step in pre:
        if type(step) not in _steps():
            raise TypeError(f"Pipeline step {type(step).__name__} is not supported; supported "
                            f"preprocessing steps: {', '.join(STEP_NAMES)}")
    return pre, final


def step_module(est: Any) -> nn.Module:
    """The torch step of a fitted preprocessing estimator."""
    return _steps()[type(est)].from_estimator(est)  # type: ignore[attr-defined]


def _steps() -> dict[type, type[nn.Module]]:
    # Exact types: a subclass may transform differently from what the step reproduces.
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    return {StandardScaler: StandardStep, MinMaxScaler: MinMaxStep, PCA: PCAStep}


def build_step(spec: dict[str, Any]) -> nn.Module:
    """An unfitted step from its ``spec`` (for the store)."""
    kw = {k: v for k, v in spec.items() if k != "kind"}
    return STEP_KINDS[spec["kind"]](**kw)
