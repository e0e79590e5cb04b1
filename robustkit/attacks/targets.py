"""Targeted runs batched over their targets: one run over rows = (sample, target) pairs
instead of one run per target, so that the per-step overhead is paid once, not once per
target (AutoAttack's APGD-T and FAB-T try 9 targets).

The most likely target (rank 1) runs alone first: it breaks most of the samples that break
at all, and a sample broken there never costs a pass toward the others. The remaining
targets then run together, in as few batches as ``row_budget`` allows; on CUDA
out-of-memory a batch splits in half and runs again.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from robustkit.attacks.linearize import differences, other_classes

# Elements per input-sized state tensor of one batched run: on CUDA 128 MiB in float32
# (larger batches keep the device busy); on CPU 2 MiB, since larger batches fall out of the
# caches (APGD-T on 826 MNIST survivors: all 8 targets at once took 1.6x the time of one
# target at a time; 2 MiB batches the 8 targets of digits-sized inputs and equals the
# sequential time on MNIST).
ROW_BUDGET = {"cuda": 2 ** 25, "cpu": 2 ** 19}
RANKS = ("logit", "linearized")  # how the targeted attacks order their targets


def row_budget(device: torch.device) -> int:
    """Elements per state tensor a batched run may use on ``device`` (CUDA's for other
    accelerators too)."""
    return ROW_BUDGET["cpu"] if device.type == "cpu" else ROW_BUDGET["cuda"]


def next_ranks(left: list[int], n: int, numel: int, budget: int) -> list[int]:
    """The target ranks of the next batched run, from the ranks ``left`` (ascending): rank 1
    alone, else as many as fit ``budget`` for ``n`` samples of ``numel`` elements (>= 1).

    Example:
        >>> next_ranks([1, 2, 3], 10, 784, 10 ** 6), next_ranks([2, 3, 4], 10, 784, 20000)
        ([1], [2, 3])
    """
    if left[0] == 1:
        return left[:1]
    return left[:max(1, budget // max(n * numel, 1))]


def pairs(rows: torch.Tensor, ranks: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(sample index, target rank) of each row of a batched run over ``rows`` x ``ranks``,
    rank-major (all samples toward the first rank, then the second, ...).

    Example:
        >>> [t.tolist() for t in pairs(torch.tensor([4, 7]), [2, 3])]
        [[4, 7, 4, 7], [2, 2, 3, 3]]
    """
    rank = torch.tensor(ranks, device=rows.device).repeat_interleave(len(rows))
    return rows.repeat(len(ranks)), rank


def run_batches(ranks: list[int], open_rows: Callable[[], int], numel: int,
                run: Callable[[list[int]], None], budget: int) -> None:
    """Call ``run(group)`` for consecutive groups of ``ranks`` (``next_ranks`` for the
    ``open_rows()`` samples still in play), each rank once. A group that runs out of CUDA
    memory runs again as groups of half its size (what it finished before stays: a run
    only ever improves the result); a single rank that does re-raises."""
    left, cap = list(ranks), len(ranks)
    while left:
        group = next_ranks(left, open_rows(), numel, budget)[:cap]
        try:
            run(group)
        except torch.cuda.OutOfMemoryError:
            if len(group) == 1:
                raise
            cap = len(group) // 2
            torch.cuda.empty_cache()
            continue
        left = left[len(group):]


def linearized_distance(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(classes (n, K - 1), distance (n, K - 1)): every class but y, sorted by the
    linearized distance from x to its boundary with y, |z_y - z_t| / ||grad(z_y - z_t)||_dual
    (dual norm: L1 for ``norm="linf"``, L2 for ``"l2"``), closest first: exact, box aside,
    on a linear model. A zero or non-finite gradient gives distance inf (ranked last, in
    logit order among themselves). One forward and K - 1 backward passes per sample (one
    batched pass). The model must already be in eval mode.

    Example:
        >>> w = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 4.0]])
        >>> model = torch.nn.Linear(2, 3)
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(w), model.bias.copy_(torch.tensor([1.0, 0.0, 0.0]))
        >>> cls, dist = linearized_distance(model, torch.full((1, 2), 0.5), torch.tensor([0]),
        ...                                 "l2")
        >>> cls.tolist(), [round(d, 3) for d in dist[0].tolist()]
        ([[2, 1]], [0.25, 0.5])
    """
    f, g, _ = differences(model, x, y, None)
    others = other_classes(y, f.shape[1] + 1)
    dual = g.norm(dim=2) if norm == "l2" else g.abs().sum(2)
    dist = f.abs() / dual
    dist = torch.where(dist.isfinite() & (dual > 0), dist, torch.full_like(dist, math.inf))
    # ties (inf) broken by logit (f = z_t - z_y): a stable sort over the logit order
    by_logit = f.argsort(dim=1, descending=True)
    d = dist.gather(1, by_logit)
    order = by_logit.gather(1, d.argsort(dim=1, stable=True))
    return others.gather(1, order), dist.gather(1, order)


def linearized_order(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str,
                     rows: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """``order`` (n, K - 1) with the rows where ``rows`` (n,) bool is True replaced by
    their classes in :func:`linearized_distance` order (only those rows are run)."""
    idx = rows.nonzero().squeeze(1)
    if not len(idx):
        return order
    out = order.clone()
    out[idx] = linearized_distance(model, x[idx], y[idx], norm)[0]
    return out


def interleave(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Two orders (n, m) of the same m classes per row merged: first[0], second[0],
    first[1], second[1], ..., each class at its earliest place.

    Example:
        >>> interleave(torch.tensor([[1, 2, 3]]), torch.tensor([[3, 2, 1]])).tolist()
        [[1, 3, 2]]
    """
    n, m = first.shape
    k = int(torch.maximum(first.max(), second.max())) + 1 if first.numel() else m
    pos = torch.arange(m, device=first.device).expand(n, m)
    key = torch.full((n, k), 2 * k + 2, dtype=torch.long, device=first.device)
    key.scatter_(1, first, 2 * pos)
    key.scatter_reduce_(1, second, 2 * pos + 1, reduce="amin")
    return key.argsort(dim=1, stable=True)[:, :m]  # classes absent from the row sort last
