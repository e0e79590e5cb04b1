"""DeepFool in the corners of the box: x_adv always finite and in [0, 1], success only
where the prediction on x_adv differs from y (regression: NaN points counted as successes
on the moons RBF SVM)."""
from __future__ import annotations

import pytest
import torch
from _fixtures import FAST_PARAMS, digits, fitted_model, toy_task

from robustkit.attacks.deepfool import BOX_MODES, _step, deepfool

# Moons test samples that box="mask" walked into the corner (1, 0), where the RBF SVM's
# gradient points out of the box in both coordinates: every step component was masked
# away, 0/0 gave NaN, and the NaN point (predicted "0") was counted as a success.
CORNER = [23, 38]


def _check(model, x, y, res) -> None:
    assert res.x_adv.isfinite().all()
    assert torch.equal(res.x_adv.clamp(0, 1), res.x_adv)
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    assert torch.equal(res.pred, pred) and torch.equal(res.success, pred != y)


def test_step_is_zero_when_every_coordinate_is_blocked():
    # x at the corner (1, 0), gradient (+, -): both components push out of the box.
    f = torch.tensor([[-4.0]])
    w = torch.tensor([[[10.0, -21.0]]])
    x = torch.tensor([[1.0, 0.0]])
    for norm in ("l2", "linf"):
        assert torch.equal(_step(f, w, x, norm, torch.tensor([True])), torch.zeros(1, 2))
        # unmasked, the step is the plain linearized one (clamping undoes it later)
        d = _step(f, w, x, norm, torch.tensor([False]))
        assert d.isfinite().all() and float((f + (w[:, 0] * d).sum(1))[0]) > 0
    # one candidate blocked, the other reachable: the reachable one is taken
    f2, w2 = torch.tensor([[-0.1, -4.0]]), torch.tensor([[[10.0, -21.0], [-1.0, 0.0]]])
    d = _step(f2, w2, x, "l2", torch.tensor([True]))
    assert d[0, 1] == 0 and d[0, 0] < 0


@pytest.mark.parametrize("box", BOX_MODES)
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_moons_svm_corner_samples_are_finite_failures(box, norm):
    model, x, y = toy_task("moons", "svm")
    res = deepfool(model, x, y, box=box, norm=norm)
    _check(model, x, y, res)
    if norm == "l2":
        # All three modes end in the corner (1, 0), still on label 1: not a success.
        assert torch.equal(y[CORNER], torch.tensor([1, 1]))
        assert not res.success[CORNER].any()
        assert torch.equal(res.x_adv[CORNER], torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    if box == "both":  # each sample's better run: it flips at least what clip alone flips
        clip = deepfool(model, x, y, box="clip", norm=norm)
        assert (res.success | ~clip.success).all()


@pytest.mark.parametrize("box", BOX_MODES)
def test_x_adv_is_finite_for_every_family_and_box_mode(box):
    te = digits("test")
    cases = [(fitted_model(f), te.x[:40], te.y[:40]) for f in sorted(FAST_PARAMS)]
    cases += [toy_task("moons", f) for f in ("svm", "gmm")]
    for model, x, y in cases:
        for norm in ("l2", "linf"):
            _check(model, x, y, deepfool(model, x, y, box=box, norm=norm))
