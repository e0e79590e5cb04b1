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


class Normalized(nn.Module):
    """Wrap a network trained on normalized inputs so that it takes x in [0, 1].

    ``Normalized(model, mean, std)(x) = model((x - mean) / std)``, with ``mean``/``std``
    per channel (C,) for images (N, C, H, W) or per feature for (N, D), as torchvision's
    ``Normalize``. Attacks then perturb and clip in [0, 1] while the network sees what it
    was trained on.

    Args:
        model: any ``nn.Module`` mapping normalized inputs to logits (N, K).
        mean: per-channel (or per-feature) mean, a sequence or tensor.
        std: per-channel (or per-feature) standard deviation, positive.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 10))
        >>> model = Normalized(net, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
        >>> model(torch.rand(2, 3, 4, 4)).shape
        torch.Size([2, 10])
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: nn.Module, mean: object, std: object) -> None:
        super().__init__()
        m = torch.as_tensor(mean, dtype=torch.float32).flatten()
        s = torch.as_tensor(std, dtype=torch.float32).flatten()
        if m.shape != s.shape or m.numel() == 0:
            raise ValueError(f"mean and std must have the same nonzero length, got "
                             f"{tuple(m.shape)} and {tuple(s.shape)}")
        if not bool((s > 0).all()):
            raise ValueError(f"std must be positive, got {s.tolist()}")
        self.model = model
        self.register_buffer("mean", m)
        self.register_buffer("std", s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        mean = self.mean.to(x.dtype).reshape(shape)
        std = self.std.to(x.dtype).reshape(shape)
        return self.model((x - mean) / std)
