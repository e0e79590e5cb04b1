"""Adaptive attacks are the honest score: against the same system they must do at least
as well as the non-adaptive ones (lower system accuracy, lower AUC), and touch nothing."""
from __future__ import annotations

import functools

import pytest
import torch
from _fixtures import auc_by_pairs, tpr_at_fpr
from conftest import fitted_model

from robustkit import load_dataset
from robustkit.defenses.adaptive import adaptive_pgd, adaptive_uap
from robustkit.defenses.detection import detection_scores
from robustkit.defenses.detector import fit_detector
from robustkit.defenses.system import DefendedSystem, system_accuracy

UAP = {"epochs": 3}


@functools.cache
def _system():
    x, y, _ = load_dataset("digits", "train", seed=0)
    model = fitted_model("cnn")
    det = fit_detector(model, x, y, eps=(0.1, 0.3), n_uaps=2, n_synthetic=4,
                       uap_params=UAP, seed=0)
    return DefendedSystem(model, det)


@functools.cache
def _rows():
    system = _system()
    tr, te = load_dataset("digits", "train", seed=0), load_dataset("digits", "test", seed=0)
    return detection_scores(system.model, system, te.x[:200], te.y[:200],
                            attacks=("fgsm", "uap", "noise"), eps=(0.3,), fit_x=tr.x[:500],
                            fit_y=tr.y[:500], steps=10, uap_params=UAP)


def _row(attack, adaptive):
    (row,) = [r for r in _rows() if r["attack"] == attack and r["adaptive"] == adaptive]
    return row


@pytest.mark.parametrize("attack", ["fgsm", "uap"])
def test_adaptive_attack_is_stronger_than_the_non_adaptive_one(attack):
    plain, adapt = _row(attack, False), _row(attack, True)
    assert adapt["system_accuracy"] < plain["system_accuracy"] - 0.1
    assert adapt["auc"] < plain["auc"]
    assert plain["auc"] > 0.8  # the detector does catch the attack that ignores it


def test_rows_have_the_scores_and_a_roc_curve():
    rows = _rows()
    assert [(r["attack"], r["adaptive"]) for r in rows] == [
        ("fgsm", False), ("fgsm", True), ("uap", False), ("uap", True), ("noise", False)]
    for r in rows:
        assert 0 <= r["auc"] <= 1 and 0 <= r["tpr_at_5fpr"] <= 1
        assert len(r["fpr"]) == len(r["tpr"]) == 101
        assert r["tpr"] == sorted(r["tpr"]) and r["tpr"][-1] == 1.0
        assert r["clean_system_accuracy"] <= r["classifier_clean_accuracy"]
    # the classifier alone does no better than the system against the plain attacks
    assert _row("fgsm", False)["classifier_robust_accuracy"] <= \
        _row("fgsm", False)["system_accuracy"]


def test_adaptive_pgd_success_means_the_system_is_fooled(digits_test):
    system = _system()
    x, y = digits_test.x[:64], digits_test.y[:64]
    r = adaptive_pgd(system, x, y, eps=0.3, steps=10, seed=1)
    assert float((r.x_adv - x).abs().max()) <= 0.3 + 1e-6
    dec = system.decide(r.x_adv)
    assert torch.equal(r.success, (dec != y) & (dec != -1))
    assert system_accuracy(dec, y, adversarial=True) == pytest.approx(
        1 - float(r.success.float().mean()))


def test_adaptive_attacks_leave_the_system_unchanged(digits_train):
    system = _system()
    before = [{k: v.clone() for k, v in m.state_dict().items()}
              for m in (system.model, system.detector)]
    grads = [p.grad for p in system.model.parameters()]
    system.detector.train()
    res = adaptive_uap(system, digits_train.x[:128], digits_train.y[:128], xi=0.2, epochs=1,
                       lambdas=(1.0,), uap_params={"epochs": 1})
    assert system.detector.training and not system.model.training
    system.detector.eval()
    for m, snap in zip((system.model, system.detector), before):
        assert all(torch.equal(v, snap[k]) for k, v in m.state_dict().items())
    assert all(p.grad is g for p, g in zip(system.model.parameters(), grads))
    assert all(p.grad is None for p in system.detector.parameters())
    assert float(res.v.abs().max()) <= 0.2 + 1e-6
    assert res.system_accuracy == min(res.candidates.values())


def test_adaptive_fgsm_is_not_run_again_beside_pgd():
    system = _system()
    te = load_dataset("digits", "test", seed=0)
    rows = detection_scores(system.model, system, te.x[:40], te.y[:40], attacks=("fgsm", "pgd"),
                            eps=(0.3,), adaptive="only", steps=5)
    assert [(r["attack"], r["adaptive"]) for r in rows] == [("pgd", True)]
    alone = detection_scores(system.model, system, te.x[:40], te.y[:40], attacks=("fgsm",),
                             eps=(0.3,), adaptive="only", steps=5)
    assert [(r["attack"], r["adaptive"]) for r in alone] == [("fgsm", True)]


@pytest.mark.parametrize(("attack", "adaptive"), [("noise", False), ("uap", True)])
def test_detection_metrics_equal_an_independent_computation(attack, adaptive):
    """AUC, TPR at 5% FPR and the rates at the threshold, recomputed from the detector's
    scores on the same perturbed inputs: AUC by counting pairs (Mann-Whitney), the ROC by
    thresholding every score, the rates by the system's own rejections."""
    from robustkit.defenses.detection import attack_system

    system, row = _system(), _row(attack, adaptive)
    tr, te = load_dataset("digits", "train", seed=0), load_dataset("digits", "test", seed=0)
    x, y = te.x[:200], te.y[:200]
    x_adv, _ = attack_system(system, attack, 0.3, x, y, adaptive=adaptive, fit_x=tr.x[:500],
                             fit_y=tr.y[:500], steps=10, uap_params=UAP)
    clean, adv = system.score(x), system.score(x_adv)
    assert row["auc"] == pytest.approx(auc_by_pairs(clean, adv), abs=1e-12)
    assert row["tpr_at_5fpr"] == pytest.approx(tpr_at_fpr(clean, adv), abs=1e-12)
    # No rectifier: the system rejects exactly the inputs the detector flags (rates are
    # float32 means: 1e-7 is far below one input's 1/200).
    assert row["tpr_at_threshold"] == pytest.approx(row["rejection_rate"], abs=1e-7)
    assert row["fpr_at_threshold"] == pytest.approx(row["clean_rejection_rate"], abs=1e-7)
    flagged = system.detector.flag(x_adv).double().mean()
    assert row["tpr_at_threshold"] == pytest.approx(float(flagged), abs=1e-7)
    assert row["fpr_at_threshold"] == pytest.approx(
        float(system.detector.flag(x).double().mean()), abs=1e-7)
