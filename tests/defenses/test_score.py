"""Scoring and its sanity checks: a gradient-masked model is flagged, a normal one is not."""
from __future__ import annotations

import pytest
import torch
from _fixtures import fitted_model
from torch import nn

from robustkit.defenses.score import CHECKS, ScoreResult, sanity_checks, score

FAST = {"attacks": ("fgsm", "pgd"), "pgd_steps": 10, "pgd_restarts": 1}


class Quantized(nn.Module):
    """Input quantization: a hard step whose gradient is zero almost everywhere, the
    classic obfuscated-gradient defense."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * 4) / 4)


@pytest.fixture(scope="module")
def test_set(digits_test):
    return digits_test.x[:200], digits_test.y[:200]


def test_normal_model_passes_every_check(test_set):
    x, y = test_set
    res = score(fitted_model("linear"), x, y, eps=[0.05, 0.1], **FAST)
    assert not res.possible_gradient_masking, res.flags()
    # the two AutoAttack checks run only when autoattack is among the attacks
    assert {c.check for c in res.checks} == set(CHECKS) - {"pgd_close_to_autoattack",
                                                           "black_box_not_stronger"}
    assert all(c.passed for c in res.checks)
    assert not any(r["possible_gradient_masking"] for r in res.rows)
    assert "possible gradient masking" not in res.table()


def test_gradient_masked_model_is_flagged(test_set):
    x, y = test_set
    masked = Quantized(fitted_model("linear"))
    res = score(masked, x, y, eps=[0.05, 0.1], **FAST)
    assert res.possible_gradient_masking
    failed = {c.check for c in res.checks if not c.passed}
    assert "large_eps" in failed
    assert all(r["possible_gradient_masking"] for r in res.rows)
    assert "possible gradient masking: large_eps" in res.table()


def test_rows_cover_attacks_eps_and_timing(test_set):
    x, y = test_set
    res = score(fitted_model("linear"), x, y, eps=[0.1], attacks=("fgsm",), pgd_steps=3,
                pgd_restarts=1, info={"model": "lin", "train_seconds": 6.0,
                                      "plain_seconds": 2.0})
    # fgsm was asked for; pgd and noise join for the checks.
    assert [r["attack"] for r in res.rows] == ["fgsm", "pgd", "noise"]
    assert all(r["eps"] == 0.1 and r["model"] == "lin" for r in res.rows)
    assert res.rows[0]["time_ratio"] == pytest.approx(3.0)
    assert res.rows[1]["robust_accuracy"] <= res.rows[0]["robust_accuracy"] + 0.02
    no_checks = score(fitted_model("linear"), x, y, eps=[0.1], attacks=("fgsm",),
                      checks=False)
    assert [r["attack"] for r in no_checks.rows] == ["fgsm"] and no_checks.checks == []


def test_sanity_checks_on_rows():
    rows = [{"attack": "fgsm", "eps": 0.1, "robust_accuracy": 0.40, "clean_accuracy": 0.9},
            {"attack": "pgd", "eps": 0.1, "robust_accuracy": 0.45},
            {"attack": "noise", "eps": 0.1, "robust_accuracy": 0.35}]
    checks = sanity_checks(rows, tolerance=0.02,
                           large_eps_row={"eps": 1.0, "robust_accuracy": 0.0})
    got = {c.check: c.passed for c in checks}
    assert got == {"iterative_not_weaker": False, "white_box_beats_noise": False,
                   "single_step_not_helping": True, "large_eps": True}
    flagged = ScoreResult(rows, checks)
    assert flagged.possible_gradient_masking and len(flagged.flags()) == 2
    leaking = sanity_checks([{"attack": "fgsm", "eps": 0.3, "robust_accuracy": 0.99,
                              "clean_accuracy": 0.98}], tolerance=0.0)
    assert [(c.check, c.passed) for c in leaking] == [("single_step_not_helping", False)]


def test_bad_arguments(test_set):
    x, y = test_set
    model = fitted_model("linear")
    with pytest.raises(ValueError, match="unknown attack 'fgsn'"):
        score(model, x, y, eps=[0.1], attacks=("fgsn",))
    with pytest.raises(ValueError, match="eps must be"):
        score(model, x, y, eps=[2.0])
    with pytest.raises(ValueError, match="tolerance"):
        score(model, x, y, eps=[0.1], attacks=("fgsm",), tolerance=-1)


def test_pgd_far_above_autoattack_is_reported_as_a_weak_attack_not_masking():
    rows = [{"attack": "pgd", "eps": 0.1, "robust_accuracy": 0.50, "clean_accuracy": 0.9},
            {"attack": "autoattack", "eps": 0.1, "robust_accuracy": 0.45,
             "clean_accuracy": 0.9, "square_only": 0.0}]
    found = {c.check: c for c in sanity_checks(rows, tolerance=0.02)}
    assert not found["pgd_close_to_autoattack"].passed
    assert found["black_box_not_stronger"].passed
    res = ScoreResult(rows, list(found.values()))
    assert not res.possible_gradient_masking
    assert any(f.startswith("weak attack: pgd_close_to_autoattack") for f in res.flags())


def test_square_breaking_what_gradients_cannot_flags_masking(test_set):
    # Quantized logits have zero input gradient: the gradient attacks of AutoAttack fail and
    # the score-based Square attack breaks samples, which the check must flag.
    x, y = test_set
    res = score(Quantized(fitted_model("linear")), x, y, eps=[0.1],
                attacks=("autoattack", "fgsm", "pgd"), pgd_steps=5, pgd_restarts=1,
                attack_params={"autoattack": {"steps": 5, "targets": 2, "queries": 200}})
    aa = next(r for r in res.rows if r["attack"] == "autoattack")
    assert "square" in aa["broken_by"]
    check = next(c for c in res.checks if c.check == "black_box_not_stronger")
    assert not check.passed and res.possible_gradient_masking
