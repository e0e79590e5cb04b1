"""The ``kernel`` certificate: sound and, on 2-D sets, exact (every sample decided)."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from _certify_grid import assert_sound_2d

from robustkit import certify, load_dataset, models
from robustkit.attacks import get as get_attack
from robustkit.certify.front import Affine, peel
from robustkit.certify.kernel import kernel_head
from robustkit.certify.kernel_bounds import (
    _rbf,
    _rbf_linear_lower,
    expansion_bounds,
    kernel_values,
)
from robustkit.models.preprocess import Normalized
from robustkit.models.sklearn import from_sklearn
from robustkit.models.sklearn.svm import SVCHead
from robustkit.models.svm import KernelSVM


@functools.cache
def two_d(name: str, n: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    x, y, _ = load_dataset(name, "test")
    return x[:n].double(), y[:n]


@functools.cache
def svm(name: str, **params: object) -> torch.nn.Module:
    model, _ = models.train("svm", name, **params)
    return model.double()


@functools.cache
def sklearn_svc(name: str, kernel: str) -> torch.nn.Module:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    x, y, _ = load_dataset(name, "train")
    est = make_pipeline(StandardScaler(), SVC(kernel=kernel, C=10.0, degree=3))
    return from_sklearn(est.fit(x.numpy(), y.numpy()))


CASES = [("moons", "svm-rbf"), ("xor", "svm-poly"), ("blobs", "svc-rbf"),
         ("moons", "svc-poly")]


def model_of(name: str, kind: str) -> torch.nn.Module:
    family, kernel = kind.split("-")
    if family == "svm":
        return svm(name, kernel=kernel, **({"degree": 2} if kernel == "poly" else {}))
    return sklearn_svc(name, kernel)


@pytest.mark.parametrize("name,kind", CASES, ids=[f"{a}-{b}" for a, b in CASES])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_two_d_exact_and_sound(name: str, kind: str, norm: str) -> None:
    model = model_of(name, kind)
    x, y = two_d(name)
    results = certify.certify(model, x, y, eps=[0.05, 0.1], norm=norm, method="kernel")
    for res in results:
        assert res.decided_share == 1.0, set(res.reasons)
        assert assert_sound_2d(model, x, y, res) > 0
    # the eps list is monotone: certified at 0.1 implies certified at 0.05
    assert bool((results[1].certified <= results[0].certified).all())
    assert bool((results[0].broken <= results[1].broken).all())


def test_without_branching_decides_less_and_stays_sound() -> None:
    model, (x, y) = svm("moons"), two_d("moons")
    flat = certify.certify(model, x, y, eps=0.1, method="kernel", branch=False)
    full = certify.certify(model, x, y, eps=0.1, method="kernel")
    assert bool((flat.certified <= full.certified).all())
    assert flat.decided_share < full.decided_share == 1.0
    assert_sound_2d(model, x, y, flat)


def _expansion(kernel: str) -> tuple:
    gen = torch.Generator().manual_seed(0)
    d, n, p = 12, 30, 4
    spec = {"kernel": kernel, "gamma": 0.7, "degree": 3, "coef0": 0.3}
    comp = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))[0][:8]
    front = Affine(comp, torch.randn(8, generator=gen, dtype=torch.float64))
    sv = torch.rand(n, 8, generator=gen, dtype=torch.float64)
    coef = torch.randn(n, p, generator=gen, dtype=torch.float64)
    bias = torch.randn(p, generator=gen, dtype=torch.float64)
    x = torch.rand(5, d, generator=gen, dtype=torch.float64)
    return spec, sv, coef, bias, front, x, gen


@pytest.mark.parametrize("kernel", ["rbf", "poly", "linear", "sigmoid"])
def test_bounds_contain_sampled_values(kernel: str) -> None:
    spec, sv, coef, bias, front, x, gen = _expansion(kernel)
    lo, hi = (x - 0.1).clamp(0, 1), (x + 0.1).clamp(0, 1)
    lower, upper, _, _ = expansion_bounds(spec, sv, coef, bias, front, lo, hi)
    pts = lo + (hi - lo) * torch.rand(200, *lo.shape, generator=gen, dtype=torch.float64)
    corners = torch.where(torch.rand(200, *lo.shape, generator=gen) < 0.5, lo, hi)
    for z in (pts, corners):
        f = kernel_values(spec, sv, front.apply(z.flatten(0, 1))) @ coef + bias
        f = f.reshape(200, 5, -1)
        assert bool((f >= lower - 1e-9).all() and (f <= upper + 1e-9).all())


def test_rbf_linear_relaxation_alone_is_sound_and_beats_intervals_in_high_dim() -> None:
    gen = torch.Generator().manual_seed(1)
    d, n = 64, 200
    spec = {"kernel": "rbf", "gamma": 0.1, "degree": 3, "coef0": 0.0}
    sv = torch.rand(n, d, generator=gen, dtype=torch.float64)
    coef = torch.randn(4, n, 3, generator=gen, dtype=torch.float64)
    bias = torch.zeros(4, 3, dtype=torch.float64)
    x = torch.rand(4, d, generator=gen, dtype=torch.float64)
    lo, hi = (x - 0.05).clamp(0, 1), (x + 0.05).clamp(0, 1)
    front = Affine(None, torch.zeros(d, dtype=torch.float64))
    kl, kh, _, _, near, far = _rbf(spec, sv, lo, hi)
    linear = _rbf_linear_lower(spec, sv, coef, bias, front, lo, hi, lo, hi, near, far)
    pts = torch.where(torch.rand(500, *lo.shape, generator=gen) < 0.5, lo, hi)
    pts = torch.cat([pts, lo + (hi - lo) * torch.rand(500, *lo.shape, generator=gen,
                                                       dtype=torch.float64)])
    k = kernel_values(spec, sv, pts.flatten(0, 1)).reshape(1000, 4, n)
    f = torch.einsum("mbn,bnp->mbp", k, coef)
    assert bool((f >= linear - 1e-9).all())
    kc, kr = (kl + kh) / 2, (kh - kl) / 2
    naive = torch.einsum("bn,bnp->bp", kc, coef) - torch.einsum("bn,bnp->bp", kr, coef.abs())
    assert bool((linear > naive).all())


@pytest.mark.parametrize("kernel", ["rbf", "poly", "linear", "sigmoid"])
def test_bounds_are_first_order_tight(kernel: str) -> None:
    """On a small box the bound's width is close to the linearization's, 2 sum r |grad|."""
    spec, sv, coef, bias, front, x, _ = _expansion(kernel)
    r = 1e-5
    lower, upper, _, _ = expansion_bounds(spec, sv, coef, bias, front, x - r, x + r)
    xg = x.clone().requires_grad_(True)
    f = kernel_values(spec, sv, front.apply(xg)) @ coef + bias
    grads = torch.stack([torch.autograd.grad(f[:, j].sum(), xg, retain_graph=True)[0]
                         for j in range(f.shape[1])], 1)  # (B, P, D)
    linear = 2 * r * grads.abs().sum(-1)
    assert bool(((upper - lower) <= 1.05 * linear + 1e-9).all())


def test_front_peels_normalized_and_pipeline() -> None:
    model = Normalized(svm("moons"), [0.2, 0.1], [0.5, 2.0])
    front, head = peel(model, (KernelSVM,), "svm")  # type: ignore[misc]
    x = two_d("moons")[0]
    assert torch.allclose(head(front.apply(x)), model(x))
    sk = sklearn_svc("blobs", "rbf")
    front, head = peel(sk, (SVCHead,), "svc")  # type: ignore[misc]
    assert torch.allclose(head(front.apply(x)), sk(x))


def test_applies_and_auto() -> None:
    assert certify.choose(svm("moons"), "linf")[0].name == "kernel"  # type: ignore[union-attr]
    mlp = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    reason = kernel_head(mlp)
    assert isinstance(reason, str) and "not a kernel SVM" in reason
    with pytest.raises(ValueError, match="does not apply"):
        certify.certify(mlp, torch.rand(2, 2), torch.zeros(2, dtype=torch.long), eps=0.1,
                        method="kernel")


def test_float32_digits_is_sound() -> None:
    model, _ = models.train("svm", "digits", max_train=400)
    x, y, _ = load_dataset("digits", "test", limit=30)
    res = certify.certify(model, x, y, eps=0.02, method="kernel", time_limit=1.0,
                          max_boxes=16)
    assert res.certified.any() and not res.unknown.all()
    att = get_attack("pgd").fn(model, x, y, eps=0.02, steps=20, restarts=2, loss="margin")
    certify.check_against_attack(res, att.success, att.x_adv, model=model, x=x, y=y)
    assert np.isfinite(res.seconds.numpy()).all()
