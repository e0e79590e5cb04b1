"""from_sklearn: logits vs decision_function / predict_log_proba, argmax vs predict, gradients.

Known answers from scikit-learn itself on digits (10 classes) and digits 0 vs 1 (2 classes).
"""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis, QuadraticDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression, Perceptron, RidgeClassifier, SGDClassifier
from sklearn.multiclass import OneVsRestClassifier
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, Normalizer, StandardScaler
from sklearn.svm import SVC, LinearSVC, NuSVC

from robustkit import models, store
from robustkit.models.sklearn import SUPPORTED, from_sklearn

ESTIMATORS = {
    **{f"svc-{k}-{s}": functools.partial(SVC, kernel=k, decision_function_shape=s)
       for k in ("linear", "poly", "rbf", "sigmoid") for s in ("ovo", "ovr")},
    "svc-break-ties": functools.partial(SVC, break_ties=True),
    "nusvc-ovo": functools.partial(NuSVC, nu=0.1, decision_function_shape="ovo"),
    "nusvc-ovr": functools.partial(NuSVC, nu=0.1, kernel="poly", degree=2),
    "linear-svc": LinearSVC,
    "logreg-multinomial": functools.partial(LogisticRegression, max_iter=50),
    "logreg-ovr": lambda: OneVsRestClassifier(LogisticRegression(max_iter=50)),
    "sgd": functools.partial(SGDClassifier, random_state=0, max_iter=20, tol=None),
    "perceptron": functools.partial(Perceptron, max_iter=20, tol=None),
    "ridge": RidgeClassifier,
    "lda": LinearDiscriminantAnalysis,
    "qda": lambda: make_pipeline(PCA(12), QuadraticDiscriminantAnalysis(reg_param=0.01)),
    "gaussian-nb": GaussianNB,
    "mlp-relu": functools.partial(MLPClassifier, (16,), max_iter=40, random_state=0),
    "mlp-tanh-2": functools.partial(MLPClassifier, (16, 8), activation="tanh", max_iter=40,
                                    random_state=0),
    "mlp-logistic": functools.partial(MLPClassifier, (8,), activation="logistic",
                                      max_iter=40, random_state=0),
    "pipeline-std-pca-minmax-svc": lambda: make_pipeline(
        StandardScaler(), PCA(20, whiten=True), MinMaxScaler(), SVC()),
    "pipeline-minmax-clip-logreg": lambda: make_pipeline(
        MinMaxScaler(clip=True), StandardScaler(with_mean=False), LogisticRegression()),
}


@functools.cache
def data(n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    keep = y < n_classes
    x, y = x[keep], y[keep]
    return x[:300], y[:300], x[300:500]


@functools.cache
def fitted(name: str, n_classes: int):
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    x, y, _ = data(n_classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return ESTIMATORS[name]().fit(x, y)


def _final(est):
    return est[-1] if hasattr(est, "steps") else est


def _scores(est, model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ours, scikit-learn's) for what the logits should reproduce."""
    logits = model(torch.from_numpy(x)).detach().numpy()
    if not hasattr(est, "decision_function"):
        return logits, est.predict_log_proba(x)
    ref = est.decision_function(x)
    if ref.ndim == 1:
        return logits[:, 1] - logits[:, 0], ref
    if ref.shape[1] != logits.shape[1]:  # ovo: the pairwise machines
        head = model.head
        return head.pairwise(model.features(torch.from_numpy(x))).detach().numpy(), ref
    fin = _final(est)
    if isinstance(fin, (SVC, NuSVC)) and not fin.break_ties:
        # libsvm's predict breaks vote ties towards the lowest class: the other tied
        # classes are shifted down by 2/3 (votes are the integer part of the ovr scores).
        votes = np.rint(ref)
        tied = votes == votes.max(1, keepdims=True)
        losers = tied & (np.arange(ref.shape[1]) != tied.argmax(1)[:, None])
        ref = ref - 2 / 3 * losers
    return logits, ref


@pytest.mark.parametrize("n_classes", [10, 2], ids=["digits", "binary"])
@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_logits_match_sklearn_and_argmax_is_predict(name, n_classes):
    est = fitted(name, n_classes)
    _, _, xt = data(n_classes)
    model = from_sklearn(est)
    got, ref = _scores(est, model, xt)
    assert got.shape == ref.shape
    # Relative for large scores (GaussianNB log-probabilities reach -1e10).
    assert np.all(np.abs(got - ref) <= 1e-8 * np.maximum(1.0, np.abs(ref))), \
        float(np.abs(got - ref).max())
    logits = model(torch.from_numpy(xt)).detach()
    assert logits.shape == (len(xt), n_classes) and logits.dtype == torch.float64
    pred = np.asarray(_final(est).classes_)[logits.argmax(1).numpy()]
    np.testing.assert_array_equal(pred, est.predict(xt))


@pytest.mark.parametrize("n_classes", [10, 2], ids=["digits", "binary"])
@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_input_gradients_match_finite_differences(name, n_classes):
    est = fitted(name, n_classes)
    model = from_sklearn(est, input_shape=(1, 8, 8))
    _, _, xt = data(n_classes)
    # Off the grid of digits values (multiples of 1/16): MinMaxScaler(clip=True) has kinks
    # at the training minimum and maximum of each pixel.
    x = torch.from_numpy(0.5 * xt[:3] + 0.2371).reshape(3, 1, 8, 8).requires_grad_(True)
    logits = model(x)
    w = torch.linspace(-1, 1, n_classes, dtype=torch.float64)
    g, = torch.autograd.grad((logits * w).sum(), x)
    # Central differences along a few random directions (votes are piecewise constant,
    # so a step small enough not to flip a pairwise machine sees only the smooth part).
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        d = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        h = 1e-6
        with torch.no_grad():
            fd = ((model(x + h * d) * w).sum() - (model(x - h * d) * w).sum()) / (2 * h)
        exact = (g * d).sum()
        assert abs(float(fd - exact)) <= 1e-4 * max(1.0, abs(float(exact))), (float(fd),
                                                                                float(exact))


def test_gradcheck_float64_svc_and_mlp():
    for name in ("svc-rbf-ovr", "mlp-tanh-2", "qda"):
        model = from_sklearn(fitted(name, 10))
        x = torch.from_numpy(data(10)[2][:2]).clone().requires_grad_(True)
        assert torch.autograd.gradcheck(model, (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", ["svc-rbf-ovr", "pipeline-std-pca-minmax-svc", "mlp-relu",
                                  "qda", "gaussian-nb", "logreg-ovr"])
def test_store_round_trip(tmp_path, name):
    est = fitted(name, 10)
    model = from_sklearn(est, input_shape=(1, 8, 8))
    store.save(model, tmp_path, family="sklearn", dataset="digits")
    back, meta = store.load(tmp_path)
    assert meta.family == "sklearn" and meta.input_shape == [1, 8, 8]
    x = torch.from_numpy(data(10)[2][:50]).reshape(50, 1, 8, 8)
    assert torch.equal(back(x), model(x))


def test_float32_inputs_get_float32_logits_computed_in_float64():
    model = from_sklearn(fitted("svc-rbf-ovr", 10))
    x64 = torch.from_numpy(data(10)[2][:4])
    x = x64.float().requires_grad_(True)
    logits = model(x)
    g, = torch.autograd.grad(logits[:, 0].sum(), x)
    assert logits.dtype == torch.float32 and g.dtype == torch.float32
    torch.testing.assert_close(logits, model(x.detach().double()).float(), atol=0, rtol=0)


def test_library_entry_point_and_input_shape_check():
    est = fitted("lda", 10)
    assert isinstance(models.from_sklearn(est), torch.nn.Module)
    with pytest.raises(ValueError, match="input_shape"):
        from_sklearn(est, input_shape=(1, 7, 7))


@pytest.mark.parametrize("bad", [
    lambda: KNeighborsClassifier(3),
    lambda: make_pipeline(Normalizer(), SVC()),
    lambda: SVC(kernel=lambda a, b: a @ b.T),
], ids=["knn", "normalizer-step", "callable-kernel"])
def test_unsupported_estimator_raises_type_error_listing_supported(bad):
    x, y, _ = data(10)
    est = bad().fit(x, y)
    with pytest.raises(TypeError) as info:
        from_sklearn(est)
    msg = str(info.value)
    assert any(n in msg for n in ("KNeighborsClassifier", "Normalizer", "kernel"))
    assert "SVC" in msg or "StandardScaler" in msg


def test_unsupported_message_names_every_supported_estimator():
    with pytest.raises(TypeError) as info:
        from_sklearn(KNeighborsClassifier(3).fit(*data(10)[:2]))
    for name in SUPPORTED:
        assert name in str(info.value)
