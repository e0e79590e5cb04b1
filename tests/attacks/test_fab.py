"""FAB: exact distances on linear models (closed form, LP / SLSQP with the box active), no
worse than DeepFool, success and distance on every digits family, torchattacks' FAB, binary
tasks, FAB-T targets, eps early exit, input checks."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _fixtures import toy_task
from torch import nn

from robustkit import attacks
from robustkit.attacks.deepfool import deepfool
from robustkit.attacks.fab import fab, fab_l2

D, K = 20, 10


def _linear(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A 10-class linear model (float64) and points far from the box faces, with their
    predictions as labels."""
    gen = torch.Generator().manual_seed(seed)
    model = nn.Linear(D, K).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(K, D, generator=gen, dtype=torch.float64))
        model.bias.copy_(torch.randn(K, generator=gen, dtype=torch.float64) * 0.1)
    x = 0.45 + 0.1 * torch.rand(40, D, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def _affine(model: nn.Module, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, c) with model(x) = A x.flatten() + c, read off an affine model (float64)."""
    dim = math.prod(shape)
    with torch.no_grad():
        c = model(torch.zeros(1, *shape)).double()[0]
        a = (model(torch.eye(dim).view(dim, *shape)).double() - c).T
    return a, c


def _size(res, norm):
    return res.linf if norm == "linf" else res.l2


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_linear_model_reaches_the_closed_form_distance(norm):
    model, x, y = _linear()
    w, z = model.weight.detach(), model(x).detach()
    wd = w[None] - w[y][:, None]  # (n, K, D): w_j - w_y
    dual = wd.abs().sum(2) if norm == "linf" else wd.norm(dim=2)
    dist = (z - z.gather(1, y[:, None])).abs() / dual
    dist[torch.arange(len(x)), y] = math.inf
    res = fab(model, x, y, norm=norm)
    assert res.success.all()
    assert float(res.x_adv.min()) > 0 and float(res.x_adv.max()) < 1  # box not active
    assert torch.allclose(res.info["distance"], dist.min(1).values, rtol=1e-3, atol=0)
    assert torch.allclose(res.info["distance"], _size(res, norm), rtol=1e-12, atol=0)
    df = deepfool(model, x, y, norm=norm)
    assert (_size(res, norm) <= _size(df, norm) + 1e-9).all()
    # FAB-T toward the runner-up class alone reaches that class's hyperplane
    runner_up = z.scatter(1, y[:, None], -math.inf).argmax(1)
    one = fab(model, x, y, norm=norm, targets=1)
    assert torch.allclose(one.info["distance"], dist.gather(1, runner_up[:, None])[:, 0],
                          rtol=1e-3, atol=0)
    every = fab(model, x, y, norm=norm, targets=50)  # capped at K - 1: every class
    assert torch.allclose(every.info["distance"], dist.min(1).values, rtol=1e-3, atol=0)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_digits_linear_model_matches_the_box_constrained_optimum(fitted, digits_test, norm):
    """Digits pixels sit on the box faces: the exact minimum is min over classes j of an LP
    (Linf) or a QP (L2) with 0 <= x + delta <= 1."""
    optimize = pytest.importorskip("scipy.optimize")
    model = fitted("linear")
    x, y = digits_test.x[:12], digits_test.y[:12]
    ok = model(x).argmax(1) == y
    x, y = x[ok], y[ok]
    a, c = _affine(model, tuple(x.shape[1:]))
    res = fab(model, x, y, norm=norm)
    assert res.success.all()
    for i in range(len(x)):
        xi = x[i].flatten().double().numpy()
        exact = min(_box_min(optimize, a[j] - a[y[i]], float(c[j] - c[y[i]]), xi, norm)
                    for j in range(K) if j != y[i])
        assert abs(float(res.info["distance"][i]) - exact) <= 1e-3 * exact
    df = deepfool(model, x, y, norm=norm)
    assert (_size(res, norm) <= _size(df, norm) + 1e-5).all()


def _box_min(optimize, w, b, x, norm):
    """Smallest ``norm`` of delta with w . (x + delta) + b >= 0, x + delta in [0, 1]."""
    w, dim = w.numpy(), len(x)
    bounds = [(-v, 1 - v) for v in x]
    if norm == "linf":
        eye, ones = np.eye(dim), np.ones((dim, 1))
        a_ub = np.block([[eye, -ones], [-eye, -ones], [-w[None], np.zeros((1, 1))]])
        res = optimize.linprog(np.r_[np.zeros(dim), 1.0], A_ub=a_ub,
                               b_ub=np.r_[np.zeros(2 * dim), w @ x + b],
                               bounds=bounds + [(0, None)], method="highs")
        return res.fun if res.status == 0 else math.inf
    start = np.clip(w / max(np.abs(w).max(), 1e-12), -x, 1 - x)  # any point will do
    res = optimize.minimize(lambda d: d @ d, start, jac=lambda d: 2 * d, method="SLSQP",
                            bounds=bounds, options={"ftol": 1e-14, "maxiter": 1000},
                            constraints=[{"type": "ineq", "fun": lambda d: w @ (x + d) + b,
                                          "jac": lambda d: w}])
    feasible = res.success and w @ (x + res.x) + b >= -1e-9
    return math.sqrt(res.fun) if feasible else math.inf


@pytest.mark.parametrize("family", ["mlp", "cnn", "svm", "gmm"])
def test_flips_correct_samples_with_distances_no_larger_than_deepfool(model, digits_test):
    x, y = digits_test.x[:64], digits_test.y[:64]
    ok = model(x).argmax(1) == y
    for norm in ("linf", "l2"):
        res = fab(model, x, y, norm=norm)
        df = deepfool(model, x, y, norm=norm)
        assert float(res.success[ok].float().mean()) >= 0.95
        found = res.success & ok
        assert torch.allclose(res.info["distance"][found], _size(res, norm)[found])
        assert float(res.info["distance"][found].median()) \
            <= 1.1 * float(_size(df, norm)[df.success & ok].median())


@pytest.mark.parametrize("family", ["mlp"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_median_distance_no_larger_than_torchattacks(model, digits_test, norm):
    import torchattacks as ta  # installed by `make install` (--no-deps): never skipped
    x, y = digits_test.x[:64], digits_test.y[:64]
    ok = model(x).argmax(1) == y
    x, y = x[ok], y[ok]
    big = 1.0 if norm == "linf" else 8.0  # their eps only filters what is returned
    theirs = ta.FAB(model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=big, steps=100,
                    n_restarts=1, seed=0)(x, y)
    with torch.no_grad():
        hit = model(theirs).argmax(1) != y
    d_theirs = (theirs - x).flatten(1)
    d_theirs = d_theirs.abs().amax(1) if norm == "linf" else d_theirs.norm(dim=1)
    ours = fab(model, x, y, norm=norm)
    assert float(ours.success.float().mean()) >= float(hit.float().mean())
    assert float(ours.info["distance"][ours.success].median()) \
        <= 1.01 * float(d_theirs[hit].median())


@pytest.mark.parametrize("dataset", ["moons", "xor"])
@pytest.mark.parametrize("family", ["svm", "gmm"])
def test_binary_tasks_against_a_grid_search(dataset, family):
    """2-D inputs: the nearest point of the other class on a 401 x 401 grid of the box is
    the minimal L2 distance to 0.0036. Where an RBF SVM's gradient points out of the box
    (far from its support vectors) FAB stalls in a corner of the box, as DeepFool does;
    random restarts find those."""
    model, x, y = toy_task(dataset, family)
    ok = model(x).argmax(1) == y
    ticks = torch.linspace(0, 1, 401)
    grid = torch.stack(torch.meshgrid(ticks, ticks, indexing="ij"), -1).view(-1, 2)
    with torch.no_grad():
        cls = model(grid).argmax(1)
    nearest = torch.stack([(grid[cls != label] - xi).norm(dim=1).min() for xi, label in zip(x, y)])
    df = deepfool(model, x, y)
    plain, targeted = fab(model, x, y, norm="l2"), fab(model, x, y, norm="l2", targets=3)
    assert torch.equal(plain.x_adv, targeted.x_adv)  # two classes: one target, the other class
    assert torch.equal(plain.x_adv[~ok], x[~ok]) and (plain.info["distance"][~ok] == 0).all()
    found = plain.success & ok
    assert float(found.sum()) >= 0.8 * float(ok.sum())  # xor svm: 51 of 60, DeepFool 51
    df_found = df.success & ok
    assert float(plain.l2[found].median()) <= 1.1 * float(df.l2[df_found].median())
    assert (plain.l2[found] >= nearest[found] - 0.0036).all()
    more = fab(model, x, y, norm="l2", restarts=5)
    found = more.success & ok
    assert float(found.sum()) >= 0.95 * float(ok.sum())
    assert float((more.l2[found] / nearest[found]).median()) <= 1.1
    assert float(fab(model, x, y, restarts=5).success[ok].float().mean()) >= 0.95  # Linf


@pytest.mark.parametrize("family", ["mlp"])
def test_eps_skips_later_runs_but_keeps_the_smallest(model, digits_test):
    x, y = digits_test.x[:40], digits_test.y[:40]
    ok = model(x).argmax(1) == y
    once = fab(model, x, y, steps=20)
    eps = float(once.info["distance"][ok].median())
    more = fab(model, x, y, steps=20, restarts=3, eps=eps, seed=1)
    small = ok & (once.info["distance"] <= eps)
    assert (more.iterations[small] == 20).all() and (more.iterations[ok & ~small] == 60).all()
    assert (more.iterations[~ok] == 0).all()
    # the first run is the same, later ones only replace with smaller perturbations
    assert (more.info["distance"] <= once.info["distance"] + 1e-6).all()
    assert torch.equal(more.x_adv[small], once.x_adv[small])
    # without eps every correct sample runs every restart; seeds change the random starts
    all_runs = fab(model, x, y, steps=20, restarts=2, seed=1)
    assert (all_runs.iterations[ok] == 40).all()
    other = fab(model, x, y, steps=20, restarts=2, seed=2)
    assert not torch.equal(all_runs.x_adv, other.x_adv)


@pytest.mark.parametrize("family", ["mlp"])
def test_misclassified_samples_are_left_alone(model, digits_test):
    x, y = digits_test.x[:10], digits_test.y[:10].clone()
    pred = model(x).argmax(1)
    y[:4] = (pred[:4] + 1) % 10
    res = fab(model, x, y, steps=10, targets=2)
    assert torch.equal(res.x_adv[:4], x[:4]) and (res.iterations[:4] == 0).all()
    assert (res.info["distance"][:4] == 0).all() and res.success[:4].all()


def test_registry_entries_and_l2_wrapper():
    model, x, y = _linear()
    for name, norm in (("fab", "linf"), ("fab_l2", "l2")):
        spec = attacks.get(name)
        assert (spec.norm, spec.kind) == (norm, "minimal")
        assert spec.fn(model, x, y, eps=None, seed=3, steps=5).success.all()
    assert torch.equal(fab_l2(model, x, y, steps=5).x_adv,
                       fab(model, x, y, norm="l2", steps=5).x_adv)
    with pytest.raises(ValueError, match="norm"):
        fab_l2(model, x, y, norm="linf")


def test_bad_parameters_raise_naming_them():
    model, x, y = _linear()
    for kw, word in (({"norm": "l1"}, "norm"), ({"steps": 0}, "steps"),
                     ({"restarts": 0}, "restarts"), ({"targets": -1}, "targets"),
                     ({"targets": 1.5}, "targets"), ({"alpha_max": 1.5}, "alpha_max"),
                     ({"eta": 0.9}, "eta"), ({"beta": 1.0}, "beta"), ({"eps": -1.0}, "eps")):
        with pytest.raises(ValueError, match=word):
            fab(model, x, y, **kw)
