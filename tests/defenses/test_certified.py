"""IBP training (Gowal et al.): certified accuracy that is not vacuous."""
from __future__ import annotations

import pytest
from _fixtures import fitted_model

from robustkit.certify import certify
from robustkit.defenses import defend, get


def test_ibp_training_gives_non_vacuous_certified_accuracy(digits_train, digits_test):
    res = defend("ibp", "mlp", digits_train.x, digits_train.y, eps=0.1,
                 model_params={"hidden": (64,), "epochs": 15})
    x, y = digits_test.x[:100], digits_test.y[:100]
    trained = certify(res.model, x, y, eps=0.1, method="crown", attack_steps=0)
    plain = certify(fitted_model("mlp"), x, y, eps=0.1, method="crown", attack_steps=0)
    assert trained.certified_accuracy >= 0.5, trained.certified_accuracy
    assert trained.certified_accuracy > plain.certified_accuracy + 0.3
    assert float((res.model(x).argmax(1) == y).float().mean()) > 0.8
    assert len(res.history) == 15 and res.params["kappa"] == 0.5


def test_ibp_schedule_and_families_are_checked(digits_train):
    assert get("ibp").families == ("linear", "mlp", "cnn")
    with pytest.raises(ValueError, match="warmup"):
        defend("ibp", "mlp", digits_train.x[:100], digits_train.y[:100], eps=0.1,
               warmup=0.6, ramp=0.6, model_params={"epochs": 1})
    with pytest.raises(ValueError, match="kappa"):
        defend("ibp", "mlp", digits_train.x[:100], digits_train.y[:100], eps=0.1, kappa=2.0)
