"""Test-double certificates and a 1-D threshold model they certify exactly.

``threshold_model(t)`` predicts class 1 where x > t (one feature in [0, 1]). The
``exact1d`` certificate decides every sample: the point of the ball and box farthest
towards the threshold is adversarial or nothing is (the model is monotone). ``clean0``
applies to any model and decides eps 0 only (certified where correct). ``unsound``
certifies every sample (a broken certificate, for the contradiction check);
``smooth1d`` is the same but registered as smoothed (it certifies "another classifier").
Use them through the ``doubles`` fixture (import ``doubles_fixture``), which registers them and removes them afterwards.
"""
from __future__ import annotations

import dataclasses
import time

import pytest
import torch
from torch import nn

from robustkit.certify.base import CERTIFIERS, CertifyResult, CertifySpec, verify_witness


class Threshold(nn.Module):
    """logits (N, 2) = scale * (t - x, x - t): class 1 where x > t."""

    def __init__(self, t: float = 0.5, scale: float = 10.0) -> None:
        super().__init__()
        self.t, self.scale = t, scale
        self.w = nn.Parameter(torch.ones(1))  # a parameter, so that devices can be read

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.flatten(1)[:, :1] - self.t) * self.scale * self.w
        return torch.cat([-z, z], dim=1)


def threshold_data(n: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n points in [0, 1] labelled by x > 0.5, with the first two labels flipped (two
    clean-misclassified samples)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g)
    y = (x[:, 0] > 0.5).long()
    y[:2] = 1 - y[:2]
    return x, y


def _applies(model: nn.Module, norm: str) -> str | None:
    return None if isinstance(model, Threshold) else "threshold models only"


def _any(model: nn.Module, norm: str) -> str | None:
    return None


def _results(model, x, y, eps, norm, method, decide):
    out = []
    for e in eps:
        t0 = time.perf_counter()
        with torch.no_grad():
            correct = model(x).argmax(1) == y
        far = (x + torch.where(y == 1, -e, e).view(-1, *([1] * (x.dim() - 1)))).clamp(0, 1)
        certified, broken, x_adv = decide(model, x, y, far, e, norm, correct)
        n = len(x)
        seconds = (time.perf_counter() - t0) / max(n, 1)
        gap = (x.flatten(1)[:, 0] - getattr(model, "t", 0.5)).abs().double()
        radius = torch.where(correct, gap, torch.zeros(n, dtype=torch.float64))
        out.append(CertifyResult(e, norm, certified, broken, x_adv, radius,
                                 torch.full((n,), seconds, dtype=torch.float64), method,
                                 ("",) * n, {"double": True}))
    return out


def _exact(model, x, y, far, e, norm, correct):
    hit = verify_witness(model, x, y, far, e, norm)
    broken = ~correct | hit
    x_adv = torch.where((~correct).view(-1, 1), x, torch.where(hit.view(-1, 1), far, x))
    return ~broken, broken, x_adv


def _everything(model, x, y, far, e, norm, correct):
    return torch.ones_like(correct), torch.zeros_like(correct), x


def _clean_only(model, x, y, far, e, norm, correct):
    # exact at eps 0 (the ball is x itself), undecided beyond: sound for any model
    wrong = ~correct
    return correct if e == 0 else torch.zeros_like(correct), wrong, x


def clean0(model, x, y, *, eps, norm, time_limit, **params):
    """Decides eps 0 exactly (correct or not), nothing beyond: sound for any model."""
    out = _results(model, x, y, eps, norm, "clean0", _clean_only)
    n = len(x)
    return [r if r.eps == 0 else dataclasses.replace(
        r, reasons=tuple("" if b else "clean0 decides eps 0 only" for b in r.broken.tolist()),
        radius=torch.full((n,), float("nan"), dtype=torch.float64)) for r in out]


def exact1d(model, x, y, *, eps, norm, time_limit, **params):
    """Exact certificate of a 1-D threshold model (test double)."""
    return _results(model, x, y, eps, norm, "exact1d", _exact)


def unsound(model, x, y, *, eps, norm, time_limit, **params):
    """Certifies every sample, whatever eps (a deliberately unsound double)."""
    return _results(model, x, y, eps, norm, "unsound", _everything)


def smooth1d(model, x, y, *, eps, norm, time_limit, **params):
    """Certifies every sample, as a smoothed certificate (test double)."""
    return _results(model, x, y, eps, norm, "smooth1d", _everything)


# Priorities above the real methods' (10-50): ``auto`` picks a double only where no real
# certificate applies (exact1d: threshold models only, which no real one takes).
SPECS = (CertifySpec("exact1d", exact1d, _applies, priority=1, exact=True),
         CertifySpec("clean0", clean0, _any, priority=900),
         CertifySpec("unsound", unsound, _any, priority=1000),
         CertifySpec("smooth1d", smooth1d, _any, priority=1001, smoothed=True))


@pytest.fixture(name="doubles")
def doubles_fixture(monkeypatch):
    """Register the doubles for one test; monkeypatch removes them afterwards."""
    for spec in SPECS:
        monkeypatch.setitem(CERTIFIERS._items, spec.name, spec)
    return {s.name: s for s in SPECS}
