"""Preprocessing layers that live inside models, so attacks act on raw inputs in [0, 1]."""
from __future__ import annotations

import torch
from torch import nn


class Standardize(nn.Module):
    """Flatten to (N, D) and map each feature to (x - mean) / scale.

    ``scale`` is the training standard deviation floored at ``min_scale``: pixels that are
    (almost) constant in training would otherwise get enormous weights after scaling.
    """

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, dim: int, *, min_scale: float = 0.1) -> None:
        super().__init__()
        self.min_scale = min_scale
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> Standardize:
        flat = x.reshape(len(x), -1).double()
        self.mean.copy_(flat.mean(0))
        self.scale.copy_(flat.std(0, unbiased=False).clamp_min(self.min_scale))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) - self.mean) / self.scale


class PCA(nn.Module):
    """Flatten to (N, D) and project onto ``k`` principal axes: (x - mean) @ components.T."""

    mean: torch.Tensor
    components: torch.Tensor

    def __init__(self, dim: int, k: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("components", torch.zeros(k, dim))

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> PCA:
        flat = x.reshape(len(x), -1).double()
        mean = flat.mean(0)
        _, _, vt = torch.linalg.svd(flat - mean, full_matrices=False)
        self.mean.copy_(mean)
        self.components.copy_(vt[: self.components.shape[0]])
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) - self.mean) @ self.components.T
