"""Randomized smoothing: the radius formula, abstaining, seeding, and its place beside the
other certificates (never chosen by "auto", never checked against attacks on f)."""
from __future__ import annotations

from statistics import NormalDist

import pytest
import torch
from torch import nn

from robustkit import certify
from robustkit.certify.smoothing import class_counts, lower_confidence


class Constant(nn.Module):
    """Predicts class ``k`` of 3 whatever the input."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(x), 3, dtype=x.dtype)
        out[:, self.k] = 1.0
        return out


class Threshold(nn.Module):
    """Class 1 where the first feature exceeds 0.5, else class 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1)[:, :1] - 0.5
        return torch.cat([-s, s], 1)


def test_radius_matches_hand_computation() -> None:
    x, y = torch.rand(4, 3), torch.zeros(4, dtype=torch.long)
    n, alpha, sigma = 500, 0.01, 0.5
    res = certify.certify(Constant(0), x, y, eps=[0.1, 5.0], norm="l2", method="smoothing",
                          n=n, alpha=alpha, sigma=sigma)
    # all n draws agree: the Clopper-Pearson lower bound is alpha ** (1 / n)
    p = alpha ** (1 / n)
    expect = sigma * NormalDist().inv_cdf(p)
    assert torch.allclose(res[0].radius, torch.full((4,), expect, dtype=torch.float64))
    assert bool(res[0].certified.all()) and not bool(res[1].certified.any())
    assert res[0].info["certifies"] == "smoothed classifier (sigma=0.5)"
    assert not bool(res[0].broken.any())


def test_wrong_class_gets_radius_zero() -> None:
    x, y = torch.rand(3, 3), torch.ones(3, dtype=torch.long)
    res = certify.certify(Constant(2), x, y, eps=0.1, norm="l2", method="smoothing", n=100)
    assert not bool(res.certified.any())
    assert bool((res.radius == 0).all())
    assert all("smoothed prediction 2 != label 1" in r for r in res.reasons)


def test_abstains_on_a_coin_flip() -> None:
    x = torch.full((5, 2), 0.5)
    y = torch.zeros(5, dtype=torch.long)
    res = certify.certify(Threshold(), x, y, eps=0.01, norm="l2", method="smoothing",
                          n=400, sigma=0.25)
    assert bool(res.unknown.all()) and bool(res.radius.isnan().all())
    assert all(r.startswith("abstained") for r in res.reasons)


def test_seeded_and_reproducible() -> None:
    x = torch.full((6, 2), 0.55)
    y = torch.ones(6, dtype=torch.long)

    def run(seed: int) -> torch.Tensor:
        return certify.certify(Threshold(), x, y, eps=0.01, norm="l2", method="smoothing",
                               n=300, seed=seed).radius

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a.nan_to_num(-1), b.nan_to_num(-1))
    assert not torch.equal(a.nan_to_num(-1), c.nan_to_num(-1))


def test_counts_batched_over_samples_and_draws() -> None:
    x = torch.tensor([[0.9, 0.0], [0.1, 0.0], [0.5, 0.0]])
    gen = torch.Generator().manual_seed(0)
    counts = class_counts(Threshold(), x, 1000, sigma=0.1, batch=700, generator=gen)
    assert counts.sum(1).tolist() == [1000, 1000, 1000]
    assert counts[0, 1] > 990 and counts[1, 0] > 990 and 400 < counts[2, 0] < 600


def test_lower_confidence_is_clopper_pearson() -> None:
    low = lower_confidence(torch.tensor([0, 50, 100]), 100, 0.05)
    assert low[0] == 0.0 and 0.40 < low[1] < 0.5 and low[2] == pytest.approx(0.05 ** 0.01)


def test_not_auto_not_linf_and_exempt_from_attack_checks() -> None:
    model = Constant(0)
    assert certify.choose(model, "l2")[0] is None or \
        certify.choose(model, "l2")[0].name != "smoothing"  # type: ignore[union-attr]
    x, y = torch.rand(2, 3), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="L2"):
        certify.certify(model, x, y, eps=0.1, norm="linf", method="smoothing")
    res = certify.certify(model, x, y, eps=0.1, norm="l2", method="smoothing", n=100)
    assert bool(res.certified.all())
    certify.check_against_attack(res, torch.ones(2, dtype=torch.bool))  # no contradiction
    with pytest.raises(ValueError, match="sigma"):
        certify.certify(model, x, y, eps=0.1, norm="l2", method="smoothing", sigma=0.0)


def test_every_family(model, digits_test) -> None:
    """Smoothing needs only forward passes: it runs on every family's digits model."""
    x, y = digits_test.x[:6], digits_test.y[:6]
    res = certify.certify(model, x, y, eps=0.1, norm="l2", method="smoothing", n=50, n0=10,
                          batch=128)
    assert len(res.status) == 6 and res.info["n"] == 50
    assert bool((res.radius[res.certified] > 0.1).all())
