"""The exact certificate of affine models against brute force, closed forms and attacks."""
from __future__ import annotations

import itertools

import pytest
import torch
from _fixtures import digits, fitted_model
from torch import nn

from robustkit.attacks.autoattack import autoattack
from robustkit.certify import certify, get
from robustkit.certify.boxball import dist_l2, dist_linf, worst_l2, worst_linf


def _grid(x0: torch.Tensor, eps: float, norm: str, steps: int = 41) -> torch.Tensor:
    """Every point of a regular grid of the eps-ball around x0 (3-D) inside [0, 1]."""
    axis = torch.linspace(-eps, eps, steps, dtype=torch.float64)
    d = torch.tensor(list(itertools.product(axis.tolist(), repeat=len(x0))), dtype=torch.float64)
    if norm == "l2":
        d = d[torch.linalg.vector_norm(d, dim=1) <= eps]
    p = x0 + d
    return p[((p >= 0) & (p <= 1)).all(1)]


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_worst_margin_is_the_grid_minimum(norm):
    gen = torch.Generator().manual_seed(0)
    eps = 0.3
    for _ in range(5):
        a = torch.randn(3, generator=gen, dtype=torch.float64)
        c = torch.randn((), generator=gen, dtype=torch.float64)
        x0 = torch.rand(3, generator=gen, dtype=torch.float64)
        fn = worst_linf if norm == "linf" else worst_l2
        value, amount = fn(a, c, x0, eps)
        grid_min = (_grid(x0, eps, norm) @ a + c).min()
        assert value <= grid_min + 1e-12  # sound: never above a point of the ball
        best = x0 - torch.sign(a) * amount  # the minimizer, inside the ball and the box
        assert float((best @ a + c - value).abs()) < 1e-9
        size = (best - x0).abs().max() if norm == "linf" else torch.linalg.vector_norm(best - x0)
        assert size <= eps + 1e-12 and (best >= 0).all() and (best <= 1).all()
        assert grid_min - value < 0.05 * a.abs().sum()  # and the grid gets close to it


def test_minimal_distance_closed_form_where_the_box_is_inactive():
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(4, 16, generator=gen, dtype=torch.float64)
    x0 = torch.full((4, 16), 0.5, dtype=torch.float64)
    m = torch.full((4,), 0.05, dtype=torch.float64)
    tau, _ = dist_linf(a, m, x0)
    assert torch.allclose(tau, m / a.abs().sum(1), rtol=1e-12)
    dist, amount = dist_l2(a, m, x0)
    assert torch.allclose(dist, m / torch.linalg.vector_norm(a, dim=1), rtol=1e-9)
    assert torch.allclose((a.abs() * amount).sum(1), m, rtol=1e-9)


def test_minimal_distance_with_the_box_against_bisection():
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(200, 8, generator=gen, dtype=torch.float64)
    x0 = torch.rand(200, 8, generator=gen, dtype=torch.float64)
    c = torch.rand(200, generator=gen, dtype=torch.float64) * 0.8
    m = (a * x0).sum(1) + c
    m = m.abs() + 0.01
    c = m - (a * x0).sum(1)
    for norm, dist_fn, worst_fn in [("linf", dist_linf, worst_linf), ("l2", dist_l2, worst_l2)]:
        dist, _ = dist_fn(a, m, x0)
        finite = torch.isfinite(dist)
        assert finite.any() and (~finite).any(), norm
        # the worst margin reaches 0 at the distance and not before
        for i in torch.nonzero(finite).flatten()[:40].tolist():
            d = float(dist[i])
            above, _ = worst_fn(a[i], c[i], x0[i], d * (1 - 1e-6))
            below, _ = worst_fn(a[i], c[i], x0[i], d * (1 + 1e-6) + 1e-12)
            assert above > 0 > below, (norm, i)
        corner, _ = worst_fn(a[~finite], c[~finite], x0[~finite], 10.0)
        assert (corner > 0).all()


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.3)])
def test_certified_is_what_autoattack_leaves(norm, eps):
    model = fitted_model("linear")
    te = digits("test")
    x, y = te.x[:60], te.y[:60]
    r = certify(model, x, y, eps=eps, norm=norm, method="linear")
    assert r.decided_share == 1.0
    aa = autoattack(model, x, y, eps=eps, norm=norm, version="fast", steps=50)
    assert torch.equal(r.certified, ~aa.success)
    assert 0 < r.certified_accuracy < 1
    # the minimal distance separates certified from broken samples
    assert (r.radius[r.certified] >= eps).all()
    assert (r.radius[r.broken] <= eps + 1e-9).all()


def test_reads_sklearn_pipelines_and_refuses_relu_networks():
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from robustkit.models import from_sklearn

    te = digits("test")
    x, y = te.x[:80].flatten(1), (te.y[:80] >= 5).long()
    pipe = make_pipeline(StandardScaler(), PCA(10), LogisticRegression()).fit(x.numpy(), y.numpy())
    model = from_sklearn(pipe, input_shape=(1, 8, 8))
    lin = get("linear")
    assert lin.applies(model, "linf") is None
    assert "ReLU" in lin.applies(fitted_model("mlp"), "linf")
    r = certify(model, te.x[:80].double(), y, eps=0.1, method="linear")
    aa = autoattack(model, te.x[:80].double(), y, eps=0.1, version="fast", steps=50)
    assert torch.equal(r.certified, ~aa.success)
    assert r.decided_share == 1.0


def test_refuses_unknown_layers():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    why = get("linear").applies(model, "linf")
    assert why is not None and "Tanh" in why
