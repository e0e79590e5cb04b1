"""AutoAttack against a defended system: its logits reproduce the system's decision, its
breaks are real system errors inside the ball, and it beats the attack that ignores the
detector."""
from __future__ import annotations

import functools

import pytest
import torch
from conftest import fitted_model

from robustkit import load_dataset
from robustkit.attacks.autoattack import autoattack
from robustkit.defenses.adaptive import adaptive_pgd
from robustkit.defenses.adaptive_autoattack import SystemLogits, adaptive_autoattack
from robustkit.defenses.detector import fit_detector
from robustkit.defenses.rectifier import Rectifier
from robustkit.defenses.system import REJECT, DefendedSystem, system_accuracy

FAST = {"version": "standard", "steps": 10, "targets": 3, "queries": 100}


@functools.cache
def _system(rectify: bool) -> DefendedSystem:
    x, y, _ = load_dataset("digits", "train", seed=0)
    model = fitted_model("mlp")
    rect = Rectifier(x.shape[1:], hidden=16) if rectify else None
    det = fit_detector(model, x[:600], y[:600], eps=(0.1, 0.3), n_uaps=1, n_synthetic=2,
                       rectifier=rect, epochs=5, uap_params={"epochs": 2}, seed=0)
    return DefendedSystem(model, det)


@pytest.mark.parametrize("rectify", [False, True], ids=["reject", "rectify"])
def test_system_logits_argmax_is_the_decision(rectify):
    system = _system(rectify)
    te = load_dataset("digits", "test", seed=0)
    x = torch.cat([te.x[:100], (te.x[:100] + 0.3 * torch.randn_like(te.x[:100])).clamp(0, 1)])
    with torch.no_grad():
        pred = SystemLogits(system)(x).argmax(1)
    k = system.model(x[:1]).shape[1]
    decided = system.decide(x)
    assert bool((torch.where(pred == k, REJECT, pred) == decided).all())
    if not rectify:
        assert bool((decided == REJECT).any())  # the noisy half exercises the reject class


def test_breaks_are_system_errors_inside_the_ball_and_beat_the_blind_attack():
    system = _system(False)
    te = load_dataset("digits", "test", seed=0)
    x, y, eps = te.x[:80], te.y[:80], 0.2
    before = {k: v.clone() for k, v in system.model.state_dict().items()}
    x_adv, info = adaptive_autoattack(system, x, y, eps=eps, **FAST)
    assert float((x_adv - x).abs().max()) <= eps + 1e-6
    dec = system.decide(x_adv)
    broken = torch.tensor([b not in ("", "clean") for b in info["broken_by"]])
    assert bool(((dec != y) & (dec != REJECT))[broken].all())
    assert sum(info["counts"].values()) == int(broken.sum()) > 0
    assert next(iter(info["counts"])) == "adaptive_pgd"  # the ensemble leads with it
    blind = autoattack(system.model, x, y, eps=eps, **FAST).x_adv
    adaptive_acc = system_accuracy(dec, y, adversarial=True)
    assert adaptive_acc < system_accuracy(system.decide(blind), y, adversarial=True)
    pgd_only = adaptive_pgd(system, x, y, eps=eps, steps=FAST["steps"])
    assert adaptive_acc <= system_accuracy(pgd_only.pred, y, adversarial=True)
    assert all(torch.equal(v, system.model.state_dict()[k]) for k, v in before.items())
