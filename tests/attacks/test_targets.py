"""Targets run batched (APGD-T, FAB-T): a batched FAB-T equals one run per target, a sample
broken toward one target stops its other targets' rows, and Square's window update."""
from __future__ import annotations

import math

import pytest
import torch
from _fixtures import ON_MLP
from torch import nn

from robustkit.attacks.apgd import run_apgd
from robustkit.attacks.apgd_targeted import apgd_t
from robustkit.attacks.fab import _run, fab
from robustkit.attacks.square import _linf_candidate
from robustkit.attacks.targets import next_ranks, pairs, row_budget, run_batches

DIGITS_N = 40


def _linear(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    model = nn.Linear(12, 6).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(6, 12, generator=gen, dtype=torch.float64))
        model.bias.zero_()
    x = 0.3 + 0.4 * torch.rand(30, 12, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def test_rank_one_runs_alone_then_the_rest_as_the_budget_allows():
    assert next_ranks([1, 2, 3, 4], 100, 784, 10 ** 6) == [1]
    assert next_ranks([2, 3, 4], 100, 784, 10 ** 6) == [2, 3, 4]
    assert next_ranks([2, 3, 4], 100, 784, 2 * 100 * 784) == [2, 3]
    assert next_ranks([2, 3, 4], 10 ** 6, 784, 10 ** 6) == [2]  # one rank at least
    assert row_budget(torch.device("cpu")) < row_budget(torch.device("cuda"))
    sample, rank = pairs(torch.tensor([5, 9, 2]), [2, 3])
    assert sample.tolist() == [5, 9, 2, 5, 9, 2] and rank.tolist() == [2, 2, 2, 3, 3, 3]


def test_batched_fab_t_equals_one_run_per_target():
    model, x, y = _linear()
    res = fab(model, x, y, targets=4, steps=15)
    with torch.no_grad():
        order = model(x).scatter(1, y[:, None], -math.inf).topk(4, dim=1).indices
    dists = []
    for j in range(4):  # the unbatched runs, toward one target each
        _, dist, _ = _run(model, x, y, order[:, j, None], x, norm="linf", steps=15,
                          alpha_max=0.1, eta=1.05, beta=0.9)
        dists.append(dist)
    expected = torch.stack(dists).amin(0)
    assert torch.isfinite(expected).all()
    assert torch.allclose(res.info["distance"], expected, rtol=0, atol=1e-9)
    assert (res.iterations == 4 * 15).all()


@ON_MLP
def test_a_broken_sample_stops_its_other_targets(mlp, data):
    x, y = data
    keep = mlp(x).argmax(1) == y
    x, y = x[keep], y[keep]
    with torch.no_grad():
        order = mlp(x).argsort(1, descending=True)
    sample, rank = pairs(torch.arange(len(x)), [1, 2, 3])
    args = {"eps": 0.1, "norm": "linf", "loss": "dlr", "steps": 30, "rho": 0.75,
            "target": order[sample, rank]}
    xa, ok, _, it, _ = run_apgd(mlp, x[sample], y[sample], gen=torch.Generator().manual_seed(0),
                                group=sample, **args)
    with torch.no_grad():
        assert (mlp(xa[ok]).argmax(1) != y[sample][ok]).all()
    broken = torch.zeros(len(x), dtype=torch.bool).index_fill_(0, sample[ok], True)
    assert 0 < broken.sum() < len(x)
    for i in range(len(x)):
        rows = sample == i
        if broken[i]:  # every row stopped by the step of the first break
            assert it[rows].max() == it[rows & ok].min()
        else:
            assert (it[rows] == 30).all() and not ok[rows].any()
    # without groups the other rows of a broken sample go on
    _, ok2, _, it2, _ = run_apgd(mlp, x[sample], y[sample], gen=torch.Generator().manual_seed(0),
                                 **args)
    assert (it2[~ok2] == 30).all()
    assert it2.sum() > it.sum()


@ON_MLP
def test_apgd_t_keeps_the_first_targets_break(mlp, data):
    x, y = data
    res = apgd_t(mlp, x, y, eps=0.1, steps=20, targets=5)
    with torch.no_grad():
        clean = mlp(x)
        pred = mlp(res.x_adv).argmax(1)
    ok = clean.argmax(1) == y
    assert torch.equal(res.success, pred != y)
    assert (res.linf <= 0.1 + 1e-6).all()
    hit = res.success & ok
    order = clean.argsort(1, descending=True)
    tgt = res.info["target"]
    assert ((tgt[hit][:, None] == order[hit, 1:6]).any(1)).all()
    assert (tgt[~hit] == -1).all()
    # a sample broken by the first target never ran toward the others
    first = hit & (tgt == order[:, 1])
    assert (res.iterations[first] <= 20).all()


def test_square_window_update_and_flip():
    x = torch.full((4, 3, 8, 8), 0.5)
    gen = torch.Generator().manual_seed(0)
    p = 4 / 64  # a 2 x 2 window
    cand = _linf_candidate(x, x, 0.1, p, gen)
    diff = cand - x
    assert torch.allclose(diff.abs()[diff != 0], torch.full_like(diff[diff != 0], 0.1))
    changed = diff != 0
    assert (changed.flatten(2).sum(2) == 4).all()  # 4 pixels per sample and channel
    assert torch.equal(changed[:, :1].expand_as(changed), changed)  # one window per sample
    rows, cols = changed[:, 0].any(2), changed[:, 0].any(1)
    assert (rows.sum(1) == 2).all() and (cols.sum(1) == 2).all()
    # the same draw from the point it made repeats nothing: the signs flip instead
    again = _linf_candidate(x, cand, 0.1, p, torch.Generator().manual_seed(0))
    assert torch.allclose(again - x, -(cand - x))


class _SmallMemory(nn.Module):
    """A model that 'runs out of CUDA memory' on batches of more than ``rows`` rows."""

    def __init__(self, model: nn.Module, rows: int) -> None:
        super().__init__()
        self.model, self.rows, self.largest = model, rows, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) > self.rows:
            raise torch.cuda.OutOfMemoryError(f"{len(x)} rows")
        self.largest = max(self.largest, len(x))
        return self.model(x)


@ON_MLP
def test_out_of_memory_splits_the_batched_targets(mlp, data):
    x, y = data
    n = len(x)
    small = _SmallMemory(mlp, 4 * n)  # rank 1 alone fits, 8 ranks at once do not
    res = apgd_t(small, x, y, eps=0.1, steps=10, targets=9)
    assert n < small.largest <= 4 * n
    assert (res.linf <= 0.1 + 1e-6).all() and res.success.any()
    fres = fab(_SmallMemory(mlp, 4 * n), x, y, eps=0.1, steps=10, targets=9)
    assert torch.isfinite(fres.info["distance"]).any()


def test_run_batches_halves_a_group_and_reraises_for_one_rank():
    seen = []

    def run(group):
        if len(group) > 2:
            raise torch.cuda.OutOfMemoryError("too many")
        seen.append(group)

    run_batches([1, 2, 3, 4, 5, 6, 7, 8, 9], lambda: 10, 64, run, 10 ** 6)
    assert seen == [[1], [2, 3], [4, 5], [6, 7], [8, 9]]

    def never(group):
        raise torch.cuda.OutOfMemoryError("none fits")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        run_batches([1, 2], lambda: 10, 64, never, 10 ** 6)
