"""The box-constrained hyperplane projection against scipy's LP (Linf) and SLSQP (L2) solvers,
the KKT conditions, the unconstrained closed form, and infeasible planes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from robustkit.attacks.hyperplane import project_to_hyperplane

D = 12


def _problems(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Points with many coordinates on the box faces, planes the box reaches (b chosen from a
    point z inside the box), some normals with zero entries."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, D, generator=gen, dtype=torch.float64)
    x[x < 0.3] = 0.0
    x[x > 0.8] = 1.0
    w = torch.randn(n, D, generator=gen, dtype=torch.float64)
    w[torch.rand(n, D, generator=gen) < 0.2] = 0.0
    z = torch.rand(n, D, generator=gen, dtype=torch.float64)
    return x, w, -(w * z).sum(1)


def test_linf_matches_linear_programming():
    optimize = pytest.importorskip("scipy.optimize")
    x, w, b = _problems(30, 0)
    delta, ok = project_to_hyperplane(x, w, b, norm="linf")
    assert ok.all()
    for i in range(len(x)):
        xi, wi = x[i].numpy(), w[i].numpy()
        # variables (delta, t): min t, |delta_k| <= t, w . (x + delta) + b = 0, x + delta in box
        cost = np.r_[np.zeros(D), 1.0]
        eye = np.eye(D)
        a_ub = np.block([[eye, -np.ones((D, 1))], [-eye, -np.ones((D, 1))]])
        res = optimize.linprog(cost, A_ub=a_ub, b_ub=np.zeros(2 * D),
                               A_eq=np.r_[wi, 0.0][None], b_eq=[-(wi @ xi) - float(b[i])],
                               bounds=[(-v, 1 - v) for v in xi] + [(0, None)], method="highs")
        assert res.status == 0
        assert abs(float(delta[i].abs().max()) - res.fun) < 1e-9
    _assert_on_plane_in_box(x, w, b, delta)


def test_l2_matches_slsqp_and_kkt():
    optimize = pytest.importorskip("scipy.optimize")
    x, w, b = _problems(15, 1)
    delta, ok = project_to_hyperplane(x, w, b, norm="l2")
    assert ok.all()
    _assert_on_plane_in_box(x, w, b, delta)
    for i in range(len(x)):
        res = _slsqp(optimize, x[i].numpy(), w[i].numpy(), float(b[i]))
        assert res.success
        assert abs(float(delta[i].norm()) - np.sqrt(res.fun)) < 1e-6
    # KKT: delta = clip(lam * w, -x, 1 - x) for one scalar lam per row
    free = (delta.abs() > 1e-12) & (x + delta > 1e-12) & (x + delta < 1 - 1e-12) & (w != 0)
    lam = torch.where(free, delta / w.where(w != 0, torch.ones_like(w)), torch.nan)
    for i in range(len(x)):
        row = lam[i][free[i]]
        assert row.numel() > 0 and torch.allclose(row, row[0].expand_as(row), atol=1e-9)
        assert torch.allclose(delta[i], (row[0] * w[i]).clamp(-x[i], 1 - x[i]), atol=1e-9)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_far_from_the_box_is_the_closed_form(norm):
    gen = torch.Generator().manual_seed(2)
    x = 0.45 + 0.1 * torch.rand(20, D, generator=gen, dtype=torch.float64)
    w = torch.randn(20, D, generator=gen, dtype=torch.float64)
    f = (w * x).sum(1)
    b = -f + 0.02 * torch.randn(20, generator=gen, dtype=torch.float64)
    delta, ok = project_to_hyperplane(x, w, b, norm=norm)
    c = -((w * x).sum(1) + b)
    if norm == "l2":
        expect = (c / (w * w).sum(1))[:, None] * w
    else:
        expect = (c / w.abs().sum(1))[:, None] * w.sign()
    assert ok.all() and torch.allclose(delta, expect, atol=1e-12)


def test_unreachable_plane_moves_every_coordinate_as_far_as_it_can():
    x = torch.tensor([[0.2, 0.7, 0.5]], dtype=torch.float64)
    w = torch.tensor([[1.0, -2.0, 0.0]], dtype=torch.float64)
    for norm in ("linf", "l2"):
        delta, ok = project_to_hyperplane(x, w, torch.tensor([-5.0], dtype=torch.float64),
                                          norm=norm)
        assert not ok.any()
        assert torch.allclose(delta, torch.tensor([[0.8, -0.7, 0.0]], dtype=torch.float64))
    # on the plane already: no move; a zero normal never gives NaN
    delta, ok = project_to_hyperplane(x, w, -(w * x).sum(1), norm="l2")
    assert ok.all() and torch.count_nonzero(delta) == 0
    delta, ok = project_to_hyperplane(x, torch.zeros_like(w), torch.ones(1, dtype=x.dtype),
                                      norm="l2")
    assert not ok.any() and torch.count_nonzero(delta) == 0


def test_batched_over_leading_dimensions_and_bad_input():
    x, w, b = _problems(6, 3)
    flat, _ = project_to_hyperplane(x, w, b, norm="linf")
    stacked, _ = project_to_hyperplane(x.view(2, 3, D), w.view(2, 3, D), b.view(2, 3),
                                       norm="linf")
    assert torch.equal(stacked.view(6, D), flat)
    with pytest.raises(ValueError, match="norm"):
        project_to_hyperplane(x, w, b, norm="l1")
    with pytest.raises(ValueError, match="b"):
        project_to_hyperplane(x, w, b[:3], norm="l2")


def _slsqp(optimize, x, w, b):
    """scipy's min ||delta||^2 with w . (x + delta) + b = 0 and x + delta in [0, 1]."""
    return optimize.minimize(lambda d: d @ d, np.zeros(D), jac=lambda d: 2 * d,
                             method="SLSQP", bounds=[(-v, 1 - v) for v in x],
                             constraints=[{"type": "eq", "fun": lambda d: w @ (x + d) + b,
                                           "jac": lambda d: w}],
                             options={"ftol": 1e-14, "maxiter": 500})


def _assert_on_plane_in_box(x, w, b, delta):
    z = x + delta
    assert float(z.min()) >= 0 and float(z.max()) <= 1
    assert torch.allclose((w * z).sum(1) + b, torch.zeros_like(b), atol=1e-9)
