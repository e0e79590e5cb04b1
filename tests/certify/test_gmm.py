"""The ``gmm`` certificate: sound and, on 2-D sets, exact (every sample decided)."""
from __future__ import annotations

import functools

import pytest
import torch
from _certify_grid import assert_sound_2d

from robustkit import certify, load_dataset, models
from robustkit.certify.gmm import _bound, gaussians, logits_at
from robustkit.certify.split import margin
from robustkit.models.sklearn import from_sklearn


@functools.cache
def two_d(name: str, n: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    x, y, _ = load_dataset(name, "test")
    return x[:n].double(), y[:n]


@functools.cache
def model_of(name: str, kind: str) -> torch.nn.Module:
    if kind.startswith("gmm-"):
        cov = kind.split("-")[1]
        model, _ = models.train("gmm", name, covariance=cov, n_components=3)
        return model.double()
    from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis
    from sklearn.naive_bayes import GaussianNB
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y, _ = load_dataset(name, "train")
    est = {"qda": make_pipeline(StandardScaler(), QuadraticDiscriminantAnalysis()),
           "nb": GaussianNB()}[kind]
    return from_sklearn(est.fit(x.numpy(), y.numpy()))


CASES = [("blobs", "gmm-full"), ("moons", "gmm-diag"), ("xor", "gmm-spherical"),
         ("moons", "qda"), ("blobs", "nb")]


@pytest.mark.parametrize("name,kind", CASES, ids=[f"{a}-{b}" for a, b in CASES])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_two_d_exact_and_sound(name: str, kind: str, norm: str) -> None:
    model = model_of(name, kind)
    x, y = two_d(name)
    for res in certify.certify(model, x, y, eps=[0.05, 0.1], norm=norm, method="gmm"):
        assert res.decided_share == 1.0, set(res.reasons)
        assert assert_sound_2d(model, x, y, res) > 0


@pytest.mark.parametrize("kind", ["gmm-full", "qda", "nb"])
def test_components_reproduce_logits(kind: str) -> None:
    model = model_of("blobs", kind)
    x = two_d("blobs")[0]
    g = gaussians(model)
    assert not isinstance(g, str)
    z = logits_at(g, x)
    out = model(x)
    if kind == "nb":  # log-softmax of the joint: the same up to a per-row constant
        z, out = z - z.logsumexp(1, keepdim=True), out - out.logsumexp(1, keepdim=True)
    assert torch.allclose(z, out, atol=1e-9)


@pytest.mark.parametrize("covariance", ["full", "diag", "spherical"])
def test_bound_is_below_sampled_margins_on_digits_with_pca(covariance: str) -> None:
    model, _ = models.train("gmm", "digits", covariance=covariance, pca=12, limit=400)
    model = model.double()
    g = gaussians(model)
    assert not isinstance(g, str)
    x, _, _ = load_dataset("digits", "test", limit=8)
    flat = x.flatten(1).double()
    y = logits_at(g, flat).argmax(1)
    gen = torch.Generator().manual_seed(0)
    for r in (0.01, 0.05):
        lo, hi = (flat - r).clamp(0, 1), (flat + r).clamp(0, 1)
        bb = _bound(g)(lo, hi, y)
        pts = lo + (hi - lo) * torch.rand(300, *lo.shape, generator=gen, dtype=torch.float64)
        pts = torch.cat([pts, torch.where(torch.rand(300, *lo.shape, generator=gen) < 0.5,
                                          lo, hi)])
        m = margin(logits_at(g, pts.flatten(0, 1)), y.repeat(600)).reshape(600, -1)
        assert bool((m >= bb.margin - 1e-9).all())
        assert bool((bb.margin > -1e6).all())


def test_float32_model_certifies_with_slack_and_stays_sound() -> None:
    model, _ = models.train("gmm", "blobs")
    x, y, _ = load_dataset("blobs", "test", limit=40)
    res = certify.certify(model, x, y, eps=0.05, method="gmm")
    assert res.certified.any()
    assert_sound_2d(model, x, y, res)


def test_applies() -> None:
    svm, _ = models.train("svm", "moons")
    reason = certify.get("gmm").applies(svm, "linf")
    assert reason is not None and "not a Gaussian classifier" in reason
    assert certify.choose(model_of("moons", "qda"), "l2")[0].name == "gmm"  # type: ignore[union-attr]
