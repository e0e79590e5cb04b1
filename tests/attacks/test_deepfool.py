"""DeepFool: distance to a hyperplane, 100% success on every family, batched == per-sample,
no worse than foolbox's DeepFool, input checks."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robustkit import attacks
from robustkit.attacks.deepfool import MARGIN, deepfool, deepfool_linf

D = 20


def _binary(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A linear 2-logit model (float64), interior points, their predictions and f = w.x + b
    with w, b the weight/bias difference of the two logits (logit 1 - logit 0)."""
    gen = torch.Generator().manual_seed(seed)
    model = nn.Linear(D, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(2, D, generator=gen, dtype=torch.float64))
        model.bias.copy_(torch.randn(2, generator=gen, dtype=torch.float64) * 0.1)
    x = 0.45 + 0.1 * torch.rand(40, D, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        pred = model(x).argmax(1)
        w = model.weight[1] - model.weight[0]
        f = x @ w + (model.bias[1] - model.bias[0])
    return model, x, pred, f


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_linear_binary_reaches_the_analytic_distance(norm):
    model, x, y, f = _binary()
    w = model.weight[1].detach() - model.weight[0].detach()
    dist = f.abs() / (w.norm() if norm == "l2" else w.abs().sum())
    res = deepfool(model, x, y, norm=norm, refine=0)
    size = res.l2 if norm == "l2" else res.linf
    assert res.success.all() and (res.iterations == 1).all()
    # One step onto the hyperplane (plus foolbox's 1e-4 margin), overshoot 2%.
    assert torch.allclose(size, 1.02 * (dist + MARGIN), rtol=1e-9, atol=0)
    direction = w / w.norm() if norm == "l2" else w.sign()
    expect = -torch.sign(f)[:, None] * direction * 1.02 * (dist + MARGIN)[:, None]
    assert torch.allclose(res.delta, expect, atol=1e-12)
    # Refinement bisects back to the hyperplane: within 2^-10 of the distance, still across.
    tight = deepfool(model, x, y, norm=norm)
    size = tight.l2 if norm == "l2" else tight.linf
    assert tight.success.all()
    assert (size >= dist * (1 - 1e-9)).all() and (size <= dist * 1.002 + MARGIN).all()


@pytest.mark.parametrize("family", ["mlp"])
def test_flips_every_sample_with_small_l2_and_rho(model, digits_test):
    x, y = digits_test.x[:150], digits_test.y[:150]
    correct = model(x).argmax(1) == y
    res = deepfool(model, x, y)
    assert res.success.all()
    assert float(res.l2[correct].median()) < 0.8
    rho = (res.l2 / x.flatten(1).norm(dim=1))[correct].mean()
    assert math.isclose(res.info["rho_adv"], float(rho), rel_tol=1e-6)
    assert torch.equal(res.x_adv.clamp(0, 1), res.x_adv)


@pytest.mark.parametrize("family", ["mlp"])
def test_median_l2_no_larger_than_foolbox(model, digits_test):
    fb = pytest.importorskip("foolbox")
    x, y = digits_test.x[:120], digits_test.y[:120]
    ok = model(x).argmax(1) == y
    x, y = x[ok], y[ok]
    _, clipped, fb_success = fb.attacks.L2DeepFoolAttack()(
        fb.PyTorchModel(model, bounds=(0, 1)), x, y, epsilons=None)
    ours = deepfool(model, x, y)
    assert ours.success.all() and fb_success.all()
    theirs = (clipped - x).flatten(1).norm(dim=1)
    assert float(ours.l2.median()) <= float(theirs.median())


@pytest.mark.parametrize("family", ["cnn"])
def test_clip_mode_is_foolbox_and_both_is_never_larger_than_either_run(model, digits_test):
    fb = pytest.importorskip("foolbox")
    x, y = digits_test.x[:64], digits_test.y[:64]
    _, theirs, _ = fb.attacks.L2DeepFoolAttack()(fb.PyTorchModel(model, bounds=(0, 1)), x, y,
                                                 epsilons=None)
    clip = deepfool(model, x, y, box="clip", refine=0)
    assert torch.allclose(clip.x_adv, theirs, atol=1e-5)  # the paper's algorithm, as foolbox
    mask, both = deepfool(model, x, y, box="mask", refine=0), deepfool(model, x, y)
    assert both.success.all() and both.info["box"] == "both"
    for single in (clip, mask):  # the unrefined runs "both" picks from, then refines
        assert (both.l2[single.success] <= single.l2[single.success] + 1e-6).all()
    assert (both.l2 < mask.l2 - 1e-4).any()  # refinement and the clipped run both count


def test_flips_every_sample_on_every_family(model, digits_test):
    x, y = digits_test.x[:32], digits_test.y[:32]
    for fn in (deepfool, deepfool_linf):
        res = fn(model, x, y)
        assert res.success.all()
        assert res.x_adv.dtype == x.dtype and res.x_adv.shape == x.shape


@pytest.mark.parametrize("family", ["mlp"])
def test_batched_equals_per_sample(model, digits_test):
    x, y = digits_test.x[:8], digits_test.y[:8]
    for norm in ("l2", "linf"):
        batched = deepfool(model, x, y, norm=norm)
        for i in range(len(x)):
            one = deepfool(model, x[i:i + 1], y[i:i + 1], norm=norm)
            assert torch.equal(one.iterations, batched.iterations[i:i + 1])
            assert torch.allclose(one.x_adv, batched.x_adv[i:i + 1], atol=1e-5)


@pytest.mark.parametrize("family", ["mlp"])
def test_linf_version_finds_smaller_linf_than_l2_version(model, digits_test):
    x, y = digits_test.x[:64], digits_test.y[:64]
    ok = model(x).argmax(1) == y
    linf = deepfool_linf(model, x[ok], y[ok]).linf
    via_l2 = deepfool(model, x[ok], y[ok]).linf
    assert float(linf.median()) < float(via_l2.median())


@pytest.mark.parametrize("family", ["mlp"])
def test_already_misclassified_samples_are_left_alone(model, digits_test):
    x, y = digits_test.x[:10], digits_test.y[:10].clone()
    pred = model(x).argmax(1)
    y[:4] = (pred[:4] + 1) % 10  # wrong labels: already "adversarial"
    res = deepfool(model, x, y)
    assert torch.equal(res.x_adv[:4], x[:4]) and (res.iterations[:4] == 0).all()
    assert res.success.all() and (res.iterations[4:][pred[4:] == y[4:]] > 0).all()


def test_registry_entries():
    for name, norm in (("deepfool", "l2"), ("deepfool_linf", "linf")):
        spec = attacks.get(name)
        assert (spec.norm, spec.kind) == (norm, "minimal")
        model, x, y, _ = _binary()
        assert spec.fn(model, x, y, eps=None, seed=3).success.all()


def test_bad_parameters_raise_naming_them():
    model, x, y, _ = _binary()
    for kw, word in (({"norm": "l1"}, "norm"), ({"overshoot": -0.1}, "overshoot"),
                     ({"max_iter": 0}, "max_iter"), ({"candidates": 1}, "candidates"),
                     ({"refine": -1}, "refine"), ({"box": "wrap"}, "box")):
        with pytest.raises(ValueError, match=word):
            deepfool(model, x, y, **kw)
