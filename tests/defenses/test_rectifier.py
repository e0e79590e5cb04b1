"""The perturbation rectifying network: identity when untrained, raises the classifier's
accuracy on unseen UAPs without costing much clean accuracy, and the PRN pipeline."""
from __future__ import annotations

import functools

import pytest
import torch
from conftest import fitted_model

from robustkit import defenses, load_dataset
from robustkit.attacks.universal import uap_sgd
from robustkit.defenses.pool import uap_pool
from robustkit.defenses.rectifier import Rectifier, fit_rectifier
from robustkit.defenses.system import DefendedSystem, system_accuracy
from robustkit.models.registry import accuracy

XI = 0.3


@functools.cache
def _prn():
    x, y, _ = load_dataset("digits", "train", seed=0)
    model = fitted_model("cnn")
    res = defenses.defend("prn", "cnn", x, y, eps=XI, base=model, n_uaps=3, n_synthetic=6,
                          uap_epochs=3, epochs=5, width=16, blocks=1, detector_epochs=10)
    return model, res


def test_untrained_rectifier_is_the_identity():
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(Rectifier([1, 8, 8])(x), x)
    torch.testing.assert_close(Rectifier([5])(x[:, 0, 0, :5]), x[:, 0, 0, :5])


def test_rectifier_raises_accuracy_on_unseen_uaps(digits_train, digits_test):
    model, res = _prn()
    prn = res.extras["detector"].rectifier
    v = uap_sgd(model, digits_train.x, digits_train.y, xi=XI, norm="linf", seed=0,
                epochs=3).v  # seed 0: not in the PRN's pool (seeds 1..3)
    x_adv = (digits_test.x + v).clamp(0, 1)
    rectified = torch.nn.Sequential(prn, model).eval()  # a new Sequential trains
    bare, fixed = accuracy(model, x_adv, digits_test.y), accuracy(rectified, x_adv, digits_test.y)
    assert fixed >= bare + 0.1
    # in the pipeline only flagged inputs are rectified, so clean accuracy barely moves
    system = DefendedSystem(model, res.extras["detector"])
    clean = system_accuracy(system.decide(digits_test.x), digits_test.y, adversarial=False)
    assert clean >= accuracy(model, digits_test.x, digits_test.y) - 0.05


def test_prn_system_rectifies_instead_of_rejecting(digits_test):
    model, res = _prn()
    det = res.extras["detector"]
    system = DefendedSystem(model, det)
    assert system.rectifier is det.rectifier
    assert res.info["pool_size"] == 9
    v = torch.full((1, 8, 8), XI)
    assert int((system.decide((digits_test.x + v).clamp(0, 1)) == -1).sum()) == 0


def test_pool_has_real_and_synthetic_members_at_their_radius(digits_train):
    model = fitted_model("linear")
    pool = uap_pool(model, digits_train.x[:200], digits_train.y[:200], xi=(0.1, 0.2),
                    n_uaps=2, n_synthetic=3, uap_params={"epochs": 1})
    assert pool.shape == (5, 1, 8, 8)
    radii = pool.reshape(5, -1).abs().amax(1)
    assert bool((radii <= 0.2 + 1e-6).all())
    assert bool((radii[2:] >= 0.1 - 1e-6).all())  # synthetic: drawn in [0.1, 0.2]
    syn = pool[2:].reshape(3, -1).abs()  # synthetic (Linf): sign pattern * radius
    assert all(torch.allclose(row[row > 0], row.max()) for row in syn)


def test_bad_arguments_raise(digits_train):
    model = fitted_model("linear")
    pool = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match="clean_fraction"):
        fit_rectifier(model, digits_train.x, digits_train.y, pool=pool, clean_fraction=1.0)
    with pytest.raises(ValueError, match="epochs"):
        fit_rectifier(model, digits_train.x, digits_train.y, pool=pool, epochs=0)
    with pytest.raises(ValueError, match="xi"):
        uap_pool(model, digits_train.x, digits_train.y, xi=(0.0, 0.1))
