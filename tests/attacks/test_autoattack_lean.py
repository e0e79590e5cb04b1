"""AutoAttack's lean version and the linearized target ranking: exact on linear models,
better targets than the top logits on 100 classes, and lean as strong as standard."""
from __future__ import annotations

import copy
import itertools

import pytest
import torch
from _fixtures import ON_MLP
from torch import nn

from robustkit.attacks.apgd_targeted import apgd_t
from robustkit.attacks.autoattack import autoattack, autoattack_curve
from robustkit.attacks.base import make_result
from robustkit.attacks.fab import fab
from robustkit.attacks.targets import linearized_distance

DIGITS_N = 100


def _linear(d: int, k: int, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    model = nn.Linear(d, k)
    with torch.no_grad():
        model.weight.copy_(torch.randn(k, d, generator=gen))
        model.bias.copy_(torch.randn(k, generator=gen) * 0.5)
    return model.eval()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_first_ranked_target_is_the_closest_boundary_on_a_linear_model(norm):
    model = _linear(6, 5, seed=1)
    gen = torch.Generator().manual_seed(2)
    x = 0.5 + 0.05 * (torch.rand(40, 6, generator=gen) - 0.5)
    y = model(x).argmax(1)
    cls, dist = linearized_distance(model, x, y, norm)
    assert bool((dist[:, 1:] >= dist[:, :-1]).all())
    # FAB (untargeted) is exact on linear models: its minimal perturbation reaches the
    # closest boundary, and lands in the class ranked first
    res = fab(model, x, y, norm=norm, steps=30)
    size = res.linf if norm == "linf" else res.l2
    inside = dist[:, 0] < 0.4  # the box plays no part there
    assert int(inside.sum()) >= 10
    assert torch.allclose(size[inside], dist[inside, 0], rtol=1e-2)
    assert torch.equal(res.pred[inside], cls[inside, 0])


def _hundred_classes() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """100 classes, y = 0 everywhere: 98 classes with high logits whose boundaries lie
    beyond eps = 0.1 (and which pull CE's gradient away), and class 99, the lowest logit,
    whose boundary lies at Linf distance ~0.08 (~6 standard deviations beyond what a random
    start in the eps box moves its logit)."""
    gen = torch.Generator().manual_seed(0)
    d, k = 20, 100
    w, b = torch.zeros(k, d), torch.zeros(k)
    w[1:99] = -0.5 + 0.01 * torch.randn(98, d, generator=gen)
    w[99] = 10.0
    x = 0.5 + 0.02 * (torch.rand(30, d, generator=gen) - 0.5)
    b[1:99] = -2.0 - (w[1:99] @ x.mean(0))
    b[99] = -16.0 - float(w[99] @ x.mean(0))
    model = nn.Linear(d, k)
    with torch.no_grad():
        model.weight.copy_(w)
        model.bias.copy_(b)
    model.eval()
    return model, x, torch.zeros(len(x), dtype=torch.long)


def test_linearized_ranking_finds_the_target_the_top_logits_miss():
    model, x, y = _hundred_classes()
    assert bool((model(x).argmax(1) == 0).all())
    cls, _ = linearized_distance(model, x, y, "linf")
    assert bool((cls[:, 0] == 99).all())
    by_logit = apgd_t(model, x, y, eps=0.1, targets=9, steps=20)
    ranked = apgd_t(model, x, y, eps=0.1, targets=9, steps=20, rank="linearized")
    assert not by_logit.success.any()
    assert ranked.success.all() and bool((ranked.info["target"] == 99).all())
    fast = autoattack(model, x, y, eps=0.1, version="fast", steps=20)
    lean = autoattack(model, x, y, eps=0.1, version="lean", steps=20, queries=50)
    assert not fast.success.any()
    assert lean.success.all() and set(lean.info["broken_by"]) == {"apgd_t"}


@ON_MLP
def test_lean_records_its_stages_and_triggers(mlp, data):
    x, y = data
    res = autoattack(mlp, x, y, eps=0.1, version="lean", steps=20, targets=3, queries=100)
    by, counts = res.info["broken_by"], res.info["counts"]
    assert res.info["version"] == "lean"
    assert torch.equal(torch.tensor([b != "" for b in by]), res.success)
    assert set(counts) <= {"apgd_ce", "apgd_t", "fab_t", "square"}
    for name, k in counts.items():
        assert sum(b == name for b in by) == k
    assert set(res.info["triggers"]) == {"fab_t", "square"}
    for reason in res.info["triggers"].values():
        assert reason == "none" or set(reason.split("+")) <= {"close", "far", "masking"}
    assert res.info["forward_images"] > 0 and res.info["backward_images"] > 0


@ON_MLP
@pytest.mark.parametrize("eps", [0.05, 0.1])
def test_lean_as_strong_as_standard_for_fewer_passes(mlp, data, eps):
    x, y = data
    std = autoattack(mlp, x, y, eps=eps)
    lean = autoattack(mlp, x, y, eps=eps, version="lean")
    assert int(lean.success.sum()) >= int(std.success.sum())
    assert lean.info["forward_images"] < std.info["forward_images"] / 3
    assert lean.info["backward_images"] < std.info["backward_images"] / 2


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_square_in_the_chain_starts_at_p_init_08_in_both_norms(monkeypatch, norm):
    from robustkit.attacks import autoattack as aa_module

    seen = []

    def spy(model, x, y, **kw):
        seen.append(kw["p_init"])
        return make_result(model, x, x.clone(), y)

    monkeypatch.setattr(aa_module, "square", spy)
    model = _linear(4, 3, seed=0)
    x = torch.rand(6, 4, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1).detach()  # all correct, and far from a 1e-4 ball's reach
    autoattack(model, x, y, eps=1e-4, norm=norm, steps=1, targets=1, queries=5)
    assert seen == [0.8]


def _plans(monkeypatch) -> list[set]:
    """Record, per call of autoattack, which (stage, sample, target) the lean chain ran."""
    from robustkit.attacks import autoattack_lean as lean

    plans: list[set] = []

    def spy(name, fn, key):
        def wrapped(model, x, y, **kw):
            for row, extra in zip(x, key(kw, len(x))):
                plans[-1].add((name, row.numpy().tobytes(), extra))
            return fn(model, x, y, **kw)
        return wrapped

    monkeypatch.setattr(lean, "run_apgd", spy("apgd", lean.run_apgd, lambda kw, n: (
        [None] * n if kw.get("target") is None else kw["target"].tolist())))
    monkeypatch.setattr(lean, "run_square", spy("square", lean.run_square, lambda kw, n: (
        [-1] * n if kw.get("copy") is None else kw["copy"].tolist())))
    return plans


@ON_MLP
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lean_gives_a_sample_the_same_result_in_any_batch(mlp, data, dtype, monkeypatch):
    # every decision (targets, FAB-T, Square) reads the sample's own numbers: a batch and
    # its two halves (other sizes, other neighbours) run the same (sample, target) pairs
    # and agree bit for bit
    x, y = data[0][:60].to(dtype), data[1][:60]
    model = copy.deepcopy(mlp).to(dtype)
    ids = torch.arange(500, 560)
    plans = _plans(monkeypatch)

    def run(sel: slice) -> object:
        plans.append(set())
        return autoattack(model, x[sel], y[sel], eps=0.1, version="lean", steps=20,
                          queries=200, sample_ids=ids[sel])

    whole, first, second = run(slice(None)), run(slice(0, 23)), run(slice(23, None))
    assert plans[0] == plans[1] | plans[2]
    assert len(plans[0]) > 40 and {p[0] for p in plans[0]} == {"apgd", "square"}
    # Square ran from the chain's point on survivors and from its own start on close ones
    assert {0, 1, 2} <= {p[2] for p in plans[0] if p[0] == "square"}
    assert torch.equal(torch.cat([first.x_adv, second.x_adv]), whole.x_adv)
    assert whole.info["broken_by"] == first.info["broken_by"] + second.info["broken_by"]
    assert {"apgd_ce", "apgd_t", ""} <= set(whole.info["broken_by"])


@ON_MLP
def test_lean_curve_beats_the_single_runs_on_every_sample_it_attacks(mlp, data):
    # lean decides per sample, so the curve runs at each eps the chain a single run gives
    # the samples it attacks, after trying the larger eps's points projected into the ball
    x, y = data
    grid = [0.03, 0.06, 0.1]
    quick = {"steps": 20, "targets": 3, "queries": 100}
    curve = autoattack_curve(mlp, x, y, eps=grid, version="lean", **quick)
    single = [autoattack(mlp, x, y, eps=e, version="lean", **quick) for e in grid]
    assert torch.equal(curve[-1].x_adv, single[-1].x_adv)  # the largest eps: a plain run
    projected = 0
    for e, c, s in zip(grid, curve, single):
        assert float(c.linf.max()) <= e + 1e-6
        inferred = ~curve[-1].success  # robust at the largest eps: not attacked below it
        assert bool((c.success | inferred >= s.success).all())
        projected += c.info["counts"].get("larger_eps", 0)
    assert projected > 0
    for lo, hi in itertools.pairwise(curve):
        assert bool((hi.success >= lo.success).all())


def test_lean_runs_no_apgd_t_on_two_classes():
    # the one target's margin is monotone in CE: APGD-T would only retrace APGD-CE
    model = _linear(8, 2, seed=3)
    with torch.no_grad():
        model.bias.zero_()
    x = torch.rand(40, 8, generator=torch.Generator().manual_seed(4))
    y = model(x).argmax(1).detach()
    res = autoattack(model, x, y, eps=0.1, version="lean", steps=10, queries=50)
    assert res.info["evaluated"]["apgd_t"] == 0 and res.info["counts"]["apgd_t"] == 0
    assert res.info["evaluated"]["apgd_ce"] == 40 and 0 < int(res.success.sum()) < 40
