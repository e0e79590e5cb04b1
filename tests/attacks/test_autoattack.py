"""AutoAttack: the chain runs each attack on the survivors only, records who broke what,
re-checks FAB's points, and its eps grid attacks fewer samples without losing strength."""
from __future__ import annotations

import itertools

import pytest
import torch
from _fixtures import ON_MLP, toy_task
from torch import nn

from robustkit.attacks import autoattack as aa_module
from robustkit.attacks.apgd import apgd
from robustkit.attacks.apgd_targeted import apgd_t
from robustkit.attacks.autoattack import autoattack, autoattack_curve
from robustkit.attacks.base import make_result
from robustkit.evaluate import evaluate

QUICK = {"steps": 20, "targets": 3, "queries": 100}

DIGITS_N = 100  # the `data` fixture's size (tests/attacks/conftest.py)


class Counter(nn.Module):
    """Counts the rows the wrapped model is evaluated on."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += len(x)
        return self.model(x)


@ON_MLP
def test_chain_records_who_broke_each_sample(mlp, data):
    x, y = data
    res = autoattack(mlp, x, y, eps=0.1, **QUICK)
    by, counts, evaluated = res.info["broken_by"], res.info["counts"], res.info["evaluated"]
    assert torch.equal(torch.tensor([b != "" for b in by]), res.success)
    assert torch.equal(res.success, res.pred != y)
    wrong = mlp(x).argmax(1) != y
    assert [b == "clean" for b in by] == wrong.tolist()
    for name, k in counts.items():
        assert sum(b == name for b in by) == k
    # each attack runs exactly on the samples the earlier ones left robust
    names = list(evaluated)
    assert evaluated[names[0]] == int((~wrong).sum())
    for a, b in itertools.pairwise(names):
        assert evaluated[b] == evaluated[a] - counts[a]
    assert float(res.linf.max()) <= 0.1 + 1e-6
    assert res.info["skipped"] == (["fab_t"] if aa_module._fab() is None else [])


@ON_MLP
def test_autoattack_at_least_as_strong_as_its_first_attack(mlp, data):
    x, y = data
    ce = apgd(mlp, x, y, eps=0.1, steps=20, seed=0)
    fast = autoattack(mlp, x, y, eps=0.1, version="fast", **QUICK)
    full = autoattack(mlp, x, y, eps=0.1, **QUICK)
    assert (fast.success >= ce.success).all() and (full.success >= fast.success).all()
    assert fast.success.sum() > ce.success.sum()  # APGD-T adds breaks at this eps


def _fake_fab(scale: float):
    """A stand-in for FAB: a stronger APGD-T (9 targets) in the ball of radius scale * eps."""

    def fab(model, x, y, *, eps=None, norm="linf", steps=100, restarts=1, targets=0, seed=0,
            sample_ids=None, **_):
        res = apgd_t(model, x, y, eps=scale * eps, steps=50, targets=9, seed=seed + 1,
                     sample_ids=sample_ids)
        return make_result(model, x, res.x_adv, y)

    return fab


@ON_MLP
@pytest.mark.parametrize("scale, counted", [(1.0, True), (3.0, False)])
def test_fab_points_count_only_inside_the_ball(mlp, data, monkeypatch, scale, counted):
    x, y = data
    monkeypatch.setattr(aa_module, "_fab", lambda: _fake_fab(scale))
    res = autoattack(mlp, x, y, eps=0.1, version="standard", steps=20, targets=1, queries=2)
    assert res.info["skipped"] == []
    assert float(res.linf.max()) <= 0.1 + 1e-6
    assert res.info["evaluated"]["fab_t"] > 0
    # at 3 eps it breaks samples APGD-CE/-T could not, but outside the ball: never counted
    assert (res.info["counts"]["fab_t"] > 0) == counted


@ON_MLP
def test_grid_keeps_breaks_and_attacks_fewer_samples(mlp, data):
    x, y = data
    grid = [0.05, 0.1, 0.15]
    counter = Counter(mlp)
    curve = autoattack_curve(counter, x, y, eps=grid[::-1], version="fast", **QUICK)[::-1]
    grid_rows, counter.rows = counter.rows, 0
    single = [autoattack(counter, x, y, eps=e, version="fast", **QUICK) for e in grid]
    assert grid_rows < counter.rows
    for a, b in itertools.pairwise(curve):
        assert (b.success >= a.success).all()
    for e, c, s in zip(grid, curve, single):
        assert float(c.linf.max()) <= e + 1e-6
        # randomness is per sample, not per batch: the subsets the grid attacks get the
        # draws the single runs give them, so the curve equals them sample for sample
        assert torch.equal(c.success, s.success)
    assert torch.equal(curve[-1].x_adv, single[-1].x_adv)  # the largest eps: a plain run


def test_grid_infers_robust_below_the_largest_eps(monkeypatch):
    """What survives the largest eps is not attacked at the smaller ones; what it broke is."""
    seen: list[tuple[float, int]] = []
    real = aa_module._at_eps

    def spy(*args, todo, **kw):
        seen.append((args[3], int(todo.sum())))
        return real(*args, todo=todo, **kw)

    monkeypatch.setattr(aa_module, "_at_eps", spy)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 3))
    x = torch.rand(40, 6)
    y = model(x).argmax(1)
    grid = [0.01, 0.02, 0.05, 0.1, 0.3]
    rs = autoattack_curve(model, x, y, eps=grid, version="fast", steps=10)
    n_broken = [int(r.success.sum()) for r in rs]
    assert 0 < n_broken[-1] < 40 and n_broken == sorted(n_broken)
    # the largest eps on all; then bisection of [0.01, 0.02, 0.05, 0.1]: 0.05 on what 0.3
    # broke, 0.02 on what 0.05 broke, 0.01 on what 0.02 broke, 0.1 on what 0.05 left
    assert [e for e, _ in seen] == [0.3, 0.05, 0.02, 0.01, 0.1]
    assert seen[0][1] == 40 and seen[1][1] == n_broken[4]
    assert seen[2][1] == n_broken[2] and seen[3][1] == n_broken[1]
    assert seen[4][1] == n_broken[4] - n_broken[2]
    for lo, hi in itertools.pairwise(rs):
        assert (hi.success >= lo.success).all()
    assert rs[2].info["inferred_robust"] == 40 - n_broken[4]
    assert rs[0].info["inferred_robust"] == 40 - n_broken[1]


@ON_MLP
def test_evaluate_uses_the_grid_path(mlp, data):
    x, y = data
    rows = evaluate(mlp, "autoattack", x, y, eps=[0.1, 0.05], version="fast", **QUICK)
    direct = autoattack_curve(mlp, x, y, eps=[0.1, 0.05], version="fast", seed=0, **QUICK)
    for row, res in zip(rows, direct):
        assert row["robust_accuracy"] == pytest.approx(float((res.pred == y).double().mean()))
    assert rows[0]["seconds"] == rows[1]["seconds"]
    (one,) = evaluate(mlp, "autoattack", x, y, eps=0.1, version="fast", **QUICK)
    alone = autoattack(mlp, x, y, eps=0.1, version="fast", **QUICK)
    assert one["robust_accuracy"] == pytest.approx(float((alone.pred == y).double().mean()))


@pytest.mark.parametrize("family", ["svm", "gmm"])
def test_binary_tasks_run_every_version(family):
    model, x, y = toy_task("moons", family, 50)
    for version in ("standard", "fast", "rand", "lean"):
        res = autoattack(model, x, y, eps=0.15, version=version, steps=10, queries=50, eot=2)
        assert float(res.linf.max()) <= 0.15 + 1e-6
        assert res.success.any() and len(res.info["broken_by"]) == len(x)


def test_rand_version_averages_over_draws():
    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3)
            self.gen = torch.Generator().manual_seed(0)

        def forward(self, x):
            return self.lin(x + 0.05 * torch.randn(x.shape, generator=self.gen))

    torch.manual_seed(0)
    model = Noisy()
    x, y = torch.rand(20, 4), torch.randint(0, 3, (20,))
    counter = Counter(model)
    res = autoattack(counter, x, y, eps=0.1, version="rand", steps=3, eot=5)
    assert list(res.info["counts"]) == ["apgd_ce", "apgd_dlr"]
    assert counter.rows >= 5 * 3 * int(res.info["evaluated"]["apgd_ce"])


def test_bad_arguments():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x, y = torch.rand(2, 4), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="version"):
        autoattack(model, x, y, eps=0.1, version="plus")
    with pytest.raises(ValueError, match="norm"):
        autoattack(model, x, y, eps=0.1, norm="l1")
    with pytest.raises(TypeError, match="eps"):
        autoattack(model, x, y, eps=[0.1])
    with pytest.raises(ValueError, match="eps"):
        autoattack_curve(model, x, y, eps=[0.1, -1.0])
