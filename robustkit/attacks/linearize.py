"""Linearized logit differences: their values and input gradients in one batched backward
pass, and the step to the closest linearized boundary (DeepFool's step; FAB and the target
ranking of the targeted attacks use the gradients too)."""
from __future__ import annotations

import math

import torch
from torch import nn

from robustkit.attacks.passes import add_backward

# Added to each linearized distance, as foolbox does: without it a sample whose step
# is partly clamped away approaches the boundary geometrically and never crosses it.
MARGIN = 1e-4


def other_classes(label: torch.Tensor, k: int) -> torch.Tensor:
    """Every class of 0..k-1 but the label, ascending, per sample: (n, k - 1).

    Example:
        >>> other_classes(torch.tensor([0, 2]), 3).tolist()
        [[1, 2], [0, 1]]
    """
    cls = torch.arange(k, device=label.device).expand(len(label), k)
    return cls[cls != label[:, None]].view(len(label), k - 1)


def differences(model: nn.Module, x: torch.Tensor, label: torch.Tensor,
                others: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logit differences f (n, k) = f_other - f_label at x, their input gradients
    w (n, k, D) and the prediction (n,), from one forward and one batched backward pass.
    ``others`` (n, k) int64: the classes; None: every class but the label, ascending."""
    xg = x.detach().requires_grad_(True)
    out = model(xg)
    if others is None:
        others = other_classes(label, out.shape[1])
    n, k = others.shape
    # Row j seeds the backward pass with d(f_other_j - f_label) for every sample at once.
    seed = out.new_zeros(k, n, out.shape[1])
    seed.scatter_(2, others.T[..., None], 1.0)
    seed.scatter_add_(2, label.expand(k, n)[..., None], out.new_full((k, n, 1), -1.0))
    try:
        (g,) = torch.autograd.grad(out, xg, grad_outputs=seed, is_grads_batched=True)
        add_backward(model, (k - 1) * n)  # the input hook sees a batched pass once
    except (RuntimeError, NotImplementedError):
        # Operations without a vmap rule (custom autograd functions): one backward each.
        g = torch.stack([torch.autograd.grad(out, xg, grad_outputs=s, retain_graph=j < k - 1)[0]
                         for j, s in enumerate(seed)])
    out = out.detach()
    diff = out.gather(1, others) - out.gather(1, label[:, None])
    return diff, g.reshape(k, n, -1).transpose(0, 1), out.argmax(1)


def closest_step(f: torch.Tensor, w: torch.Tensor, x: torch.Tensor, norm: str, mask: torch.Tensor
          ) -> torch.Tensor:
    """DeepFool's step (n, D) from x (n, D) to the closest linearized boundary
    ``f_j + w_j . r = 0`` among the k candidates (f (n, k) < 0, w (n, k, D)); for the
    samples where ``mask`` (n,) is True, moving only the coordinates that can move: a
    pixel at 0 (1) is not pushed further down (up). A sample with no reachable candidate
    (every coordinate of every w_j blocked or zero) or a non-finite step gets a zero step."""
    if bool(mask.any()):
        blocked = ((x[:, None] <= 0) & (w < 0)) | ((x[:, None] >= 1) & (w > 0))
        w = w.masked_fill(blocked & mask[:, None, None], 0.0)
    tiny = torch.finfo(w.dtype).tiny
    # Divide by the largest entry first: tiny gradients would underflow when squared.
    top = w.abs().amax(2, keepdim=True).clamp_min(tiny)
    u = w / top
    dual = u.norm(dim=2) if norm == "l2" else u.abs().sum(2)  # dual norm of w, over top
    # A candidate whose (masked) gradient is zero cannot be reached by a linear step.
    dist = (f.abs() / (top.squeeze(2) * dual).clamp_min(tiny)).masked_fill(dual == 0, math.inf)
    best = dist.argmin(1)
    rows = torch.arange(len(f), device=f.device)
    u, dist = u[rows, best], (dist[rows, best] + MARGIN)[:, None]
    if norm == "l2":
        step = dist * u / dual[rows, best, None].clamp_min(tiny)
    else:
        step = dist * u.sign()
    # inf * 0 (nothing reachable) and NaN gradients give non-finite rows: no step there
    return step.masked_fill(~step.isfinite().all(1, keepdim=True), 0.0)


def flat(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1)


def size(d: torch.Tensor, norm: str) -> torch.Tensor:
    return flat(d).norm(dim=1) if norm == "l2" else flat(d).abs().amax(1)
