"""``robustkit.certify.bracket``: certificate and attack combined, and the run-time check."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from _certify_doubles import Threshold, doubles_fixture, threshold_data  # noqa: F401

from robustkit.certify import CertificateContradiction
from robustkit.certify.bracket import STATUSES, bracket

EPS = [0.0, 0.05, 0.2]


def test_exact_certificate_brackets_the_attack_and_decides_everything(doubles):
    model, (x, y) = Threshold(), threshold_data()
    out = bracket(model, x, y, eps=EPS, method="exact1d", attack="pgd",
                  attack_params={"steps": 5})
    assert [b.eps for b in out] == EPS
    for b in out:
        assert b.certified_accuracy <= b.upper <= b.attacked_accuracy
        assert b.exact_share == 1.0
        assert b.upper - b.certified_accuracy == pytest.approx(1 - b.exact_share)
        assert sum(b.counts().values()) == len(x) and set(b.status) <= set(STATUSES)
        # an exact 1-D certificate: robust exactly where the threshold is farther than eps
        correct = (x[:, 0] > 0.5).long() == y
        expected = correct & ((x[:, 0] - 0.5).abs() > b.eps)
        assert torch.equal(b.certified, expected)
    # the two flipped labels are broken by the certificate at every eps
    assert all(b.status[:2] == ["broken_by_certificate"] * 2 for b in out)
    # larger balls certify fewer and break more
    assert out[0].certified_accuracy > out[2].certified_accuracy
    assert out[2].row()["broken_by_certificate"] > 2


def test_unsound_certificate_raises_naming_the_broken_samples(doubles):
    model, (x, y) = Threshold(), threshold_data()
    x, y = x[2:], y[2:]  # only clean-correct samples: the attack must do the catching
    with pytest.raises(CertificateContradiction, match=r"'unsound' certified samples \[.*"
                                                      r"at eps=0.2 .*attack 'pgd' broke"):
        bracket(model, x, y, eps=[0.2], method="unsound", attack="pgd",
                attack_params={"steps": 5})
    # the same certificate passes where nothing can be broken: eps 0
    (b,) = bracket(model, x, y, eps=0.0, method="unsound", attack="pgd",
                   attack_params={"steps": 5})
    assert b.certified_accuracy == 1.0


def test_unsound_certificate_of_a_misclassified_input_raises_without_an_attack(doubles):
    model, (x, y) = Threshold(), threshold_data()
    y = y.clone()
    y[5] = 1 - y[5]  # misclassified, yet the double says certified
    y[0], y[1] = 1 - y[0], 1 - y[1]
    with pytest.raises(CertificateContradiction, match=r"samples \[5\].*clean input"):
        bracket(model, x, y, eps=[0.0], method="unsound", attack="none")


def test_smoothed_certificate_is_never_checked_against_the_model(doubles):
    model, (x, y) = Threshold(), threshold_data()
    (b,) = bracket(model, x[2:], y[2:], eps=[0.2], method="smooth1d", attack="pgd",
                   attack_params={"steps": 5})
    assert b.smoothed and math.isnan(b.exact_share)
    assert b.upper == b.attacked_accuracy < b.certified_accuracy  # two classifiers


def test_without_attack_the_certificate_alone_sets_the_bounds(doubles):
    model, (x, y) = Threshold(), threshold_data()
    (b,) = bracket(model, x, y, eps=0.1, method="auto", attack="none")
    assert b.method == "exact1d"  # lowest priority number that applies
    assert math.isnan(b.attacked_accuracy) and b.exact_share == 1.0
    assert b.upper == pytest.approx(b.certified_accuracy)


def test_autoattack_runs_once_over_the_eps_list(doubles):
    model, (x, y) = Threshold(), threshold_data(20)
    out = bracket(model, x, y, eps=[0.05, 0.3], method="exact1d", attack="autoattack",
                  attack_params={"version": "fast", "steps": 5})
    assert out[0].attack_seconds == out[1].attack_seconds  # one run over the grid
    assert all(b.attacked_accuracy >= b.upper for b in out)


def test_a_certificate_witness_that_is_not_adversarial_raises(doubles, monkeypatch):
    from robustkit.certify.base import CERTIFIERS, CertifySpec

    def liar(model, x, y, *, eps, norm, time_limit, **params):
        res = doubles["exact1d"].fn(model, x, y, eps=eps, norm=norm, time_limit=time_limit)
        # claims every correct sample broken, with x itself as the "witness"
        return [dataclasses.replace(r, certified=torch.zeros_like(r.certified),
                                    broken=torch.ones_like(r.broken), x_adv=x,
                                    method="liar") for r in res]

    monkeypatch.setitem(CERTIFIERS._items, "liar", CertifySpec("liar", liar, lambda m, n: None))
    model, (x, y) = Threshold(), threshold_data()
    with pytest.raises(RuntimeError, match="'liar' marked samples \\[2, 3"):
        bracket(model, x, y, eps=[0.01], method="liar", attack="none")


@pytest.mark.parametrize("kw, match", [
    ({"attack": "deepfool"}, "minimal attack"),
    ({"attack": "pgd", "attack_params": {"norm": "l2"}}, "same ball"),
    ({"attack": "pgd", "attack_params": {"steps": 0}}, "steps=0"),
    ({"norm": "l1"}, "norm='l1'"),
    ({"eps": -1.0}, "eps=-1.0"),
])
def test_bad_arguments_name_the_parameter(doubles, kw, match):
    model, (x, y) = Threshold(), threshold_data()
    with pytest.raises(ValueError, match=match):
        bracket(model, x, y, **{"eps": 0.1, "method": "exact1d", **kw})


@pytest.mark.parametrize("norm, eps", [("linf", [0.05, 0.1]), ("l2", [0.5, 1.0])])
def test_real_linear_certificate_against_autoattack(fitted, digits_test, norm, eps):
    model = fitted("linear")
    x, y = digits_test.x[:40], digits_test.y[:40]
    out = bracket(model, x, y, eps=eps, norm=norm, attack="autoattack",
                  attack_params={"version": "fast", "steps": 10})
    for b in out:
        assert b.method == "linear" and b.exact_share == 1.0
        # exact: AutoAttack cannot go below the certificate and the bracket is closed
        assert b.certified_accuracy == b.upper <= b.attacked_accuracy
    assert out[0].certified_accuracy > out[1].certified_accuracy
