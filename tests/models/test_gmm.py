"""The gmm family: log-likelihoods equal scikit-learn's, exact input gradients, accuracy floor."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _fixtures import follows_dtype, json_rebuilt

from robustkit import load_dataset, models
from robustkit.models.gmm import GaussianMixtureClassifier, fit_mixtures
from robustkit.models.preprocess import PCA

CASES = [(cov, pca) for cov in ("full", "diag", "spherical") for pca in (None, 12)]
IDS = [f"{cov}-pca{pca}" for cov, pca in CASES]


@pytest.fixture(scope="module")
def small_train():
    return load_dataset("digits", "train", limit=600)


def _exact(ds, covariance: str, pca: int | None):
    """Mixtures fit by hand and the float64 module carrying them."""
    flat = ds.x.reshape(len(ds.x), -1).double()
    front = PCA(64, pca).double().fit(flat) if pca else None
    z = front(flat) if front is not None else flat
    mixtures = fit_mixtures(z.numpy(), ds.y.numpy(), n_classes=10, n_components=2,
                            covariance=covariance)
    priors = np.log(np.bincount(ds.y.numpy()) / len(ds.y))
    module = GaussianMixtureClassifier.from_mixtures(mixtures, priors, [1, 8, 8], front)
    return mixtures, module


@pytest.mark.parametrize("covariance, pca", CASES, ids=IDS)
def test_log_likelihood_equals_score_samples(covariance, pca, small_train, digits_test):
    mixtures, exact = _exact(small_train, covariance, pca)
    x = digits_test.x.double()
    z = exact.features(x).numpy()
    want = np.stack([gm.score_samples(z) for gm in mixtures], 1)
    np.testing.assert_allclose(exact.log_likelihood(x).numpy(), want, rtol=0, atol=1e-5)
    # The registry path fits the same mixtures; it stores float32 (values reach ~300).
    fitted = models.create("gmm", covariance=covariance, pca=pca).fit(
        small_train.x, small_train.y, n_classes=10)
    np.testing.assert_allclose(fitted.double()(x).numpy(), exact(x).numpy(), rtol=1e-6,
                               atol=1e-3)


@pytest.mark.parametrize("covariance, pca", CASES, ids=IDS)
def test_input_gradient_passes_gradcheck(covariance, pca, small_train, digits_test):
    _, module = _exact(small_train, covariance, pca)
    x = digits_test.x[:4].double().requires_grad_(True)
    assert torch.autograd.gradcheck(module, (x,), eps=1e-6, atol=1e-5, rtol=1e-4,
                                    fast_mode=True)


def test_logits_are_log_prior_plus_log_likelihood(small_train, digits_test):
    _, module = _exact(small_train, "full", None)
    x = digits_test.x[:10].double()
    diff = module(x) - module.log_likelihood(x)
    counts = torch.bincount(small_train.y).double()
    assert torch.allclose(diff, (counts / counts.sum()).log().expand_as(diff))


def test_digits_accuracy_floor_with_defaults():
    _, rec = models.train("gmm", "digits", device="cpu")
    assert rec.test_accuracy >= 0.97, rec


@pytest.mark.parametrize("family", ["gmm"])
def test_arch_rebuilds_identical_logits(model, digits_test):
    json_rebuilt("gmm", model, digits_test.x)


def test_arch_round_trip_with_pca(small_train, digits_test):
    model = models.create("gmm", pca=10, covariance="diag").fit(
        small_train.x, small_train.y, n_classes=10)
    clone = models.build("gmm", json.loads(json.dumps(model.arch)))
    clone.load_state_dict(model.state_dict())
    assert model.arch["pca"] == 10 and clone.pca is not None
    assert torch.equal(clone(digits_test.x), model(digits_test.x))


@pytest.mark.parametrize("family", ["gmm"])
def test_dtype_and_device_follow_x(model, digits_test):
    x = digits_test.x[:5]
    follows_dtype(model, x)
    assert all(torch.isfinite(model(x.to(d))).all() for d in (torch.float32, torch.float64))


@pytest.mark.parametrize("params, match", [
    ({"covariance": "tied"}, r"covariance.*'full', 'diag', 'spherical'"),
    ({"pca": 0}, r"pca=0 is not valid.*integer >= 1 or null"),  # checked before the data
    ({"pca": 100}, r"pca=100"),
    ({"n_components": 0}, r"n_components=0"),
    ({"reg": -1.0}, r"reg=-1.0"),
    ({"components": 3}, r"unknown parameter.*covariance, max_iter, n_components, n_init"),
])
def test_bad_params_raise_value_error(params, match, small_train):
    with pytest.raises(ValueError, match=match):
        models.create("gmm", **params).fit(small_train.x, small_train.y, n_classes=10)


def test_class_with_too_few_samples_raises(small_train):
    keep = (small_train.y != 4) | (torch.arange(len(small_train.y)) % 100 == 0)
    with pytest.raises(ValueError, match="n_components=2 training samples of every class"):
        models.create("gmm").fit(small_train.x[keep], small_train.y[keep], n_classes=10)
