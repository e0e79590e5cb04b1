"""Adversarial retraining of the kernel SVM and the GMM raises FGSM accuracy at the
trained eps."""
from __future__ import annotations

import pytest
from _fixtures import FAST_PARAMS, fitted_model

from robustkit.attacks.fgsm import fgsm
from robustkit.defenses import defend


def fgsm_accuracy(model, x, y, eps):
    return float((fgsm(model, x, y, eps=eps).pred == y).float().mean())


@pytest.mark.parametrize("family,eps,rounds", [("svm", 0.3, 4), ("gmm", 0.2, 2)])
def test_retrain_raises_fgsm_accuracy(family, eps, rounds, digits_train, digits_test):
    plain = fitted_model(family)
    res = defend("retrain", family, digits_train.x, digits_train.y, eps=eps, rounds=rounds,
                 model_params=FAST_PARAMS[family], base=plain)
    x, y = digits_test.x, digits_test.y
    before, after = fgsm_accuracy(plain, x, y, eps), fgsm_accuracy(res.model, x, y, eps)
    assert after > before + 0.1, (before, after)
    clean = float((res.model(x).argmax(1) == y).float().mean())
    assert clean > 0.95
    assert [h["round"] for h in res.history] == list(range(rounds))
    assert res.history[-1]["n_fit"] == (rounds + 1) * len(digits_train.y)


def test_retrain_pool_ratio_and_no_accumulation(digits_train):
    x, y = digits_train.x[:200], digits_train.y[:200]
    res = defend("retrain", "linear", x, y, eps=0.1, rounds=2, ratio=0.5, accumulate=False,
                 model_params={"epochs": 2})
    assert [h["n_fit"] for h in res.history] == [300, 300]
    assert res.info["n_adversarial"] == 100


def test_retrain_rejects_bad_settings(digits_train):
    x, y = digits_train.x[:50], digits_train.y[:50]
    with pytest.raises(ValueError, match="fixed-budget"):
        defend("retrain", "linear", x, y, eps=0.1, attack="deepfool")
    with pytest.raises(ValueError, match="rounds"):
        defend("retrain", "linear", x, y, eps=0.1, rounds=0)
    with pytest.raises(ValueError, match="ratio"):
        defend("retrain", "linear", x, y, eps=0.1, ratio=-1)
