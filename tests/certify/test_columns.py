"""``evaluate(..., certify=...)``: certificate columns on evaluation rows, and their checks."""
from __future__ import annotations

import math

import pytest
from _certify_doubles import Threshold, doubles_fixture, threshold_data  # noqa: F401

from robustkit.certify import CertificateContradiction
from robustkit.certify.columns import COLUMNS, certify_options
from robustkit.evaluate import evaluate

EPS = [0.0, 0.05, 0.2]


def test_rows_gain_the_columns_only_when_asked(doubles):
    model, (x, y) = Threshold(), threshold_data()
    plain = evaluate(model, "pgd", x, y, eps=EPS, steps=5)
    assert not set(COLUMNS) & set(plain[0])
    rows = evaluate(model, "pgd", x, y, eps=EPS, steps=5, certify={"method": "exact1d"})
    assert [r["eps"] for r in rows] == EPS
    for p, r in zip(plain, rows):
        assert r["robust_accuracy"] == p["robust_accuracy"]  # the attack's number unchanged
        assert r["certify_method"] == "exact1d" and r["certify_seconds"] >= 0
        assert r["certified_accuracy"] <= r["robust_accuracy"]
        assert r["exact_share"] == 1.0  # exact certificate: every sample decided
    assert rows[0]["certified_accuracy"] == rows[0]["clean_accuracy"]
    assert rows[2]["certified_accuracy"] < rows[1]["certified_accuracy"]


def test_exact_share_counts_the_attacks_witnesses(doubles):
    model, (x, y) = Threshold(), threshold_data()
    rows = evaluate(model, "pgd", x, y, eps=EPS, steps=5, certify={"method": "clean0"})
    at0, _, at2 = rows
    assert at0["exact_share"] == 1.0 and at0["certified_accuracy"] == at0["clean_accuracy"]
    # beyond eps 0 clean0 certifies nothing: decided = broken by the attack (or misclassified)
    assert at2["certified_accuracy"] == 0.0
    assert at2["exact_share"] == pytest.approx(1 - at2["robust_accuracy"])


def test_an_unsound_certificate_raises_naming_the_attack(doubles):
    model, (x, y) = Threshold(), threshold_data()
    with pytest.raises(CertificateContradiction, match=r"'unsound' certified samples \[0, 1"
                                                      r".*clean input"):
        evaluate(model, "pgd", x, y, eps=[0.2], steps=5, certify={"method": "unsound"})
    with pytest.raises(CertificateContradiction, match=r"'unsound' certified samples \[.*"
                                                      r"attack 'fgsm'"):
        evaluate(model, "fgsm", x[2:], y[2:], eps=[0.3], certify={"method": "unsound"})


def test_a_smoothed_certificate_has_no_exact_share_and_no_check(doubles):
    model, (x, y) = Threshold(), threshold_data()
    (row,) = evaluate(model, "pgd", x, y, eps=[0.2], steps=5, certify={"method": "smooth1d"})
    assert row["certified_accuracy"] == 1.0 > row["robust_accuracy"]
    assert math.isnan(row["exact_share"])


def test_options_defaults_and_errors(doubles):
    assert certify_options(None) is None and certify_options(False) is None
    assert certify_options(True) == {"method": "auto", "time_limit": 30.0, "params": {}}
    for bad, match in [({"method": "nope"}, "certify.method='nope'"),
                       ({"time_limit": 0}, "certify.time_limit=0"),
                       ({"time_limit": True}, "certify.time_limit=True"),
                       ({"limit": 3}, r"unknown key\(s\) \['limit'\]")]:
        with pytest.raises(ValueError, match=match):
            certify_options(bad)
    for bad, match in [({"params": 3}, "certify.params=3"), ("yes", "certify='yes'")]:
        with pytest.raises(TypeError, match=match):
            certify_options(bad)
    model, (x, y) = Threshold(), threshold_data()
    with pytest.raises(ValueError, match="certify.method"):
        evaluate(model, "pgd", x, y, eps=[0.1], certify={"method": "nope"})


def test_no_applicable_certificate_gives_no_numbers(doubles, monkeypatch):
    from robustkit.certify.base import CERTIFIERS

    for name in list(CERTIFIERS._items):  # only the doubles that need a threshold model
        if CERTIFIERS.get(name).applies(Threshold(), "linf") is None and name != "exact1d":
            monkeypatch.delitem(CERTIFIERS._items, name)
    model, (x, y) = Threshold(), threshold_data()
    (row,) = evaluate(model, "fgsm", x, y, eps=[0.1], certify=True)
    assert row["certify_method"] == "exact1d"
    monkeypatch.delitem(CERTIFIERS._items, "exact1d")
    (row,) = evaluate(model, "fgsm", x, y, eps=[0.1], certify=True)
    assert row["certify_method"] == "none"
    assert math.isnan(row["certified_accuracy"]) and math.isnan(row["exact_share"])
