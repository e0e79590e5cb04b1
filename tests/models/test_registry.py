"""Registry contract over every family, and the digits accuracy floors of the NN families."""
from __future__ import annotations

import pytest
import torch
from _fixtures import FAMILIES, fitted_model

from robustkit import models


def test_names_cover_the_five_families_and_resnet():
    assert {"linear", "svm", "gmm", "mlp", "cnn", "resnet18"} <= set(models.names())


def test_unknown_family_lists_valid_names():
    with pytest.raises(ValueError, match="valid: .*linear"):
        models.create("forest")


def test_unknown_parameter_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown parameter.*'depth'.*valid: .*hidden"):
        models.create("mlp", depth=3)


def test_bad_choice_lists_choices():
    with pytest.raises(ValueError, match="activation='gelu'.*relu"):
        models.create("mlp", activation="gelu")


def test_contract_shape_dtype_gradient(family, digits_test):
    model = fitted_model(family)
    x = digits_test.x[:16]
    logits = model(x)
    assert logits.shape == (16, 10)
    assert logits.dtype == x.dtype
    assert torch.isfinite(logits).all()
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xr).logsumexp(1).sum(), xr)
    assert g.shape == x.shape and g.abs().sum() > 0
    assert not model.training


def test_contract_arch_rebuild_gives_identical_logits(family, digits_test):
    model = fitted_model(family)
    clone = models.build(family, model.arch)
    clone.load_state_dict(model.state_dict())
    clone.eval()
    x = digits_test.x[:32]
    assert torch.equal(clone(x), model(x))


def test_contract_float64_follows_input(family, digits_test):
    model = fitted_model(family)
    m64 = models.build(family, model.arch)
    m64.load_state_dict(model.state_dict())
    m64 = m64.double().eval()
    x = digits_test.x[:8].double()
    out = m64(x)
    assert out.dtype == torch.float64
    assert torch.allclose(out.float(), model(x.float()), atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("name,params", [("linear", {"solver": "minibatch"}), ("mlp", {})])
def test_training_is_deterministic(name, params, digits_train):
    spec = models.create(name, epochs=2, **params)
    a = spec.fit(digits_train.x, digits_train.y, seed=3)
    b = spec.fit(digits_train.x, digits_train.y, seed=3)
    c = spec.fit(digits_train.x, digits_train.y, seed=4)
    x = digits_train.x[:20]
    assert torch.equal(a(x), b(x))
    assert not torch.equal(a(x), c(x))


@pytest.mark.parametrize("loss", ["logistic", "hinge", "perceptron"])
def test_linear_lbfgs_is_deterministic_and_seed_free(loss, digits_train):
    # Full-batch L-BFGS from W = 0: the seed cannot matter (the data split is given).
    spec = models.create("linear", loss=loss, max_iter=10)
    a = spec.fit(digits_train.x, digits_train.y, seed=3)
    b = spec.fit(digits_train.x, digits_train.y, seed=4)
    x = digits_train.x[:20]
    assert torch.equal(a(x), b(x))


def test_linear_lbfgs_reaches_the_regularized_logistic_optimum(digits_train):
    # At the optimum of mean CE + wd/2 ||W||^2 the gradient vanishes: W-gradient = -wd W.
    import torch.nn.functional as F

    wd = 1e-2
    m = models.create("linear", weight_decay=wd, max_iter=500).fit(digits_train.x,
                                                                   digits_train.y)
    w = m.linear.weight.detach().clone().requires_grad_(True)
    b = m.linear.bias.detach().clone().requires_grad_(True)
    z = m.standardize(digits_train.x)
    loss = F.cross_entropy(F.linear(z, w, b), digits_train.y) + wd / 2 * w.pow(2).sum()
    gw, gb = torch.autograd.grad(loss, (w, b))
    assert float(gw.abs().max()) < 1e-4 and float(gb.abs().max()) < 1e-4


def test_training_does_not_touch_global_rng(digits_train):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    models.create("linear", epochs=1).fit(digits_train.x, digits_train.y, seed=9)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("name,floor", [("linear", 0.96), ("mlp", 0.97), ("cnn", 0.98)])
def test_digits_accuracy_floor_with_defaults(name, floor):
    _, rec = models.train(name, "digits", device="cpu")
    assert rec.test_accuracy >= floor, rec
    assert rec.n_train == 1347 and rec.n_test == 450


@pytest.mark.parametrize("loss", ["hinge", "perceptron"])
def test_linear_losses_train_real_classifiers(loss):
    _, rec = models.train("linear", "digits", loss=loss, epochs=10)
    assert rec.test_accuracy > 0.85, rec


def test_resnet18_forward_backward_on_tiny_cifar_like_data():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(12, 3, 32, 32, generator=gen)
    y = torch.arange(12) % 3
    m = models.create("resnet18", epochs=1, batch_size=6).fit(x, y, n_classes=3)
    xr = x[:2].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(m(xr).sum(), xr)
    assert m(x[:2]).shape == (2, 3) and g.abs().sum() > 0


def test_cnn_rejects_flat_inputs():
    with pytest.raises(ValueError, match="image inputs"):
        models.create("cnn", epochs=1).fit(torch.rand(10, 4), torch.arange(10) % 2)


def test_fit_rejects_nan():
    x = torch.rand(10, 4)
    x[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        models.create("linear", epochs=1).fit(x, torch.arange(10) % 2)


def test_families_list_matches_conftest():
    assert set(FAMILIES) <= set(models.names())
