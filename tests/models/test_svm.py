"""The svm family: parity with scikit-learn's SVC, exact input gradients, accuracy floors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from _fixtures import follows_dtype, json_rebuilt

from robustkit import load_dataset, models
from robustkit.models.svm import KernelSVM, fit_svcs, resolve_gamma

KERNELS = {
    "rbf": {"kernel": "rbf"},
    "poly2": {"kernel": "poly", "degree": 2},
    # gamma != 1 and coef0 != 0, so a poly gradient missing either factor fails gradcheck.
    "poly3": {"kernel": "poly", "degree": 3, "gamma": 0.3, "coef0": 0.5},
    "linear": {"kernel": "linear", "C": 1.0},
}


def _flat(x: torch.Tensor) -> np.ndarray:
    return x.reshape(len(x), -1).double().numpy()


def _svcs(ds, params: dict) -> list:
    p = {**models.get("svm").defaults, **params}
    return fit_svcs(_flat(ds.x), ds.y.numpy(), n_classes=10, kernel=p["kernel"], C=p["C"],
                    gamma=resolve_gamma(p["gamma"], _flat(ds.x)), degree=p["degree"],
                    coef0=p["coef0"])


@pytest.fixture(scope="module")
def small_train(digits_train):
    return load_dataset("digits", "train", limit=400)


@pytest.mark.parametrize("params", list(KERNELS.values()), ids=list(KERNELS))
def test_scores_equal_each_binary_svc_decision_function(params, small_train, digits_test):
    svcs = _svcs(small_train, params)
    x = digits_test.x[:200].double()
    want = np.stack([svc.decision_function(_flat(x)) for svc in svcs], 1)
    exact = KernelSVM.from_svcs(svcs, [1, 8, 8], 10)
    np.testing.assert_allclose(exact(x).numpy(), want, rtol=0, atol=1e-5)
    # The registry path fits the same machines and stores them in float32.
    fitted = models.create("svm", **params).fit(small_train.x, small_train.y, n_classes=10)
    np.testing.assert_allclose(fitted.double()(x).numpy(), want, rtol=0, atol=1e-4)


def test_two_classes_give_minus_f_and_f():
    tr, te = load_dataset("moons", "train"), load_dataset("moons", "test")
    model = models.create("svm", gamma=5.0).fit(tr.x, tr.y, n_classes=2)
    (svc,) = fit_svcs(_flat(tr.x), tr.y.numpy(), n_classes=2, C=10.0, gamma=5.0)
    f = svc.decision_function(_flat(te.x))
    logits = model.double()(te.x.double()).numpy()
    np.testing.assert_allclose(logits, np.stack([-f, f], 1), rtol=0, atol=1e-4)
    assert (logits.argmax(1) == svc.predict(_flat(te.x))).all()
    assert model.arch["n_sv"] == len(svc.support_)


@pytest.mark.parametrize("params", list(KERNELS.values()), ids=list(KERNELS))
def test_input_gradient_passes_gradcheck(params, small_train, digits_test):
    model = KernelSVM.from_svcs(_svcs(small_train, params), [1, 8, 8], 10)
    x = digits_test.x[:4].double().requires_grad_(True)
    # fast_mode compares random projections u^T J v of the numerical and analytic
    # Jacobians: a wrong scale (ART's poly gradient misses gamma) still shows.
    assert torch.autograd.gradcheck(model, (x,), eps=1e-6, atol=1e-5, fast_mode=True)


def test_poly_gradient_has_gamma_factor(small_train, digits_test):
    model = KernelSVM.from_svcs(_svcs(small_train, KERNELS["poly3"]), [1, 8, 8], 10)
    x = digits_test.x[:1].double().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x)[0, 2], x)
    sv, a, g = model.support_vectors, model.dual_coef[:, 2], model.arch["gamma"]
    inner = g * (sv @ x.detach().reshape(-1)) + model.arch["coef0"]
    want = ((a * 3 * inner**2 * g) @ sv).reshape(x.shape)
    assert torch.allclose(grad, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("params, floor", [
    ({}, 0.985),
    ({"kernel": "poly", "degree": 2}, 0.98),
    ({"kernel": "poly", "degree": 3}, 0.98),
], ids=["rbf-defaults", "quadratic", "cubic"])
def test_digits_accuracy_floor(params, floor):
    _, rec = models.train("svm", "digits", device="cpu", **params)
    assert rec.test_accuracy >= floor, rec


@pytest.mark.parametrize("family", ["svm"])
def test_arch_rebuilds_identical_logits(model, digits_test):
    arch = json_rebuilt("svm", model, digits_test.x)
    assert arch["n_sv"] == len(model.support_vectors) and isinstance(arch["gamma"], float)


@pytest.mark.parametrize("family", ["svm"])
def test_dtype_and_device_follow_x(model, digits_test):
    follows_dtype(model, digits_test.x[:5])


def test_max_train_subsamples_stratified_and_seeded(digits_train):
    spec = models.create("svm", max_train=200)
    a = spec.fit(digits_train.x, digits_train.y, n_classes=10, seed=3)
    b = spec.fit(digits_train.x, digits_train.y, n_classes=10, seed=3)
    assert a.arch["n_sv"] <= 200
    assert torch.equal(a.support_vectors, b.support_vectors)
    assert models.accuracy(a, digits_train.x, digits_train.y) > 0.9


@pytest.mark.parametrize("params, match", [
    ({"kernel": "sigmoid"}, r"kernel.*'linear', 'poly', 'rbf'"),
    ({"gamma": "big"}, r"gamma='big'.*'scale', 'auto'"),
    ({"gamma": -1.0}, r"gamma=-1.0.*positive"),
    ({"C": 0}, r"C=0"),
    ({"degree": 1.5}, r"degree=1.5"),
    ({"max_train": 0}, r"max_train=0"),
    ({"cost": 1.0}, r"unknown parameter.*C, coef0, degree, gamma, kernel, max_train"),
])
def test_bad_params_raise_value_error(params, match, digits_train):
    with pytest.raises(ValueError, match=match):
        models.create("svm", **params).fit(digits_train.x[:50], digits_train.y[:50],
                                           n_classes=10)


def test_missing_class_raises(digits_train):
    keep = digits_train.y != 4
    with pytest.raises(ValueError, match="every class"):
        models.create("svm").fit(digits_train.x[keep], digits_train.y[keep], n_classes=10)
