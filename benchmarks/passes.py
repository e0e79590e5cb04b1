"""The time model passes alone take: the floor under any implementation that runs the
same passes. The passes are counted by the package (``robustkit.attacks.passes``);
``floor_seconds`` turns the counts into seconds with per-image costs measured in the same
process.
"""
from __future__ import annotations

import torch
from attacks_common import timed
from torch import nn


def per_image_costs(model: nn.Module, x: torch.Tensor, *, repeats: int = 5
                    ) -> tuple[float, float]:
    """(seconds per image of a forward pass without gradient, seconds per image of a
    forward pass with gradient plus the backward pass to the input), on the batch ``x``,
    the best of ``repeats`` timings each (after one warm-up), on the clock of ``timed``
    (the one the methods' seconds use)."""
    model.eval()
    y = torch.zeros(len(x), dtype=torch.long, device=x.device)

    def fwd() -> None:
        with torch.no_grad():
            model(x)

    def fwd_bwd() -> None:
        xg = x.detach().requires_grad_(True)
        loss = nn.functional.cross_entropy(model(xg), y)
        torch.autograd.grad(loss, xg)

    out = []
    for fn in (fwd, fwd_bwd):
        fn()
        out.append(min(timed(fn)[1] for _ in range(repeats)) / len(x))
    return out[0], out[1]


def floor_seconds(forward_images: int, backward_images: int, costs: tuple[float, float]
                  ) -> float:
    """Seconds of the passes alone: the images without a backward at the forward cost,
    those with one at the forward+backward cost."""
    fwd, fwd_bwd = costs
    return (forward_images - backward_images) * fwd + backward_images * fwd_bwd
