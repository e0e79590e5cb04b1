"""The foolbox bridge: same FGSM as foolbox, every family, the model untouched, seeded."""
from __future__ import annotations

import pytest
import torch

from robustkit import attacks, models
from robustkit.attacks.fgsm import fgsm
from robustkit.evaluate import evaluate

pytest.importorskip("foolbox")
N = 24


@pytest.fixture()
def fitted(request, family):
    if family not in models.names():
        pytest.skip(f"model family {family!r} is not registered yet")
    return request.getfixturevalue("model")


@pytest.mark.parametrize("family", ["mlp", "svm", "linear"])
def test_fgsm_equals_foolbox_fgsm(fitted, digits_test):
    # Models whose softmax does not saturate in float32 here: where p_y rounds to 1,
    # foolbox's autograd gradient loses its true-class term and ours does not, by design
    # (test_fgsm.py::test_fgsm_follows_the_exact_gradient_where_float32_cross_entropy_...).
    x, y = digits_test.x[:100], digits_test.y[:100]
    with torch.no_grad():
        assert (fitted(x).softmax(1).max(1).values < 1).all()
    for eps in (0.03, 0.1):
        ours = fgsm(fitted, x, y, eps=eps)
        theirs = attacks.get("foolbox:LinfFastGradientAttack").fn(fitted, x, y, eps=eps)
        assert torch.allclose(ours.x_adv, theirs.x_adv, atol=1e-6)
        assert torch.equal(ours.success, theirs.success)


def test_specs_infer_norm_and_kind():
    expect = {"FGSM": ("linf", "fixed"), "L2PGD": ("l2", "fixed"),
              "L2CarliniWagnerAttack": ("l2", "minimal"), "LinfDeepFoolAttack": ("linf", "minimal"),
              "EADAttack": ("l1", "minimal")}
    for name, (norm, kind) in expect.items():
        spec = attacks.get(f"foolbox:{name}")
        assert (spec.name, spec.norm, spec.kind) == (f"foolbox:{name}", norm, kind)
    with pytest.raises(ValueError, match="unknown foolbox attack 'NoSuchAttack'.*LinfPGD"):
        attacks.get("foolbox:NoSuchAttack")


def test_linf_pgd_on_every_family_leaves_the_model_untouched(fitted, digits_test):
    x, y = digits_test.x[:N], digits_test.y[:N]
    params = [p.detach().clone() for p in fitted.parameters()]
    grads = [None if p.grad is None else p.grad.clone() for p in fitted.parameters()]
    flags = [p.requires_grad for p in fitted.parameters()]
    rng = torch.get_rng_state()
    fitted.train()  # foolbox would warn about train mode; the bridge must not
    try:
        res = attacks.get("foolbox:LinfPGD").fn(fitted, x, y, eps=0.1, steps=5, seed=3)
        assert all(m.training for m in fitted.modules())
    finally:
        fitted.eval()
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(a, b) for a, b in zip(params, fitted.parameters()))
    assert flags == [p.requires_grad for p in fitted.parameters()]
    for g, p in zip(grads, fitted.parameters()):
        assert (g is None and p.grad is None) or torch.equal(g, p.grad)
    assert float(res.linf.max()) <= 0.1 + 1e-6 and float(res.x_adv.min()) >= 0
    again = attacks.get("foolbox:LinfPGD").fn(fitted, x, y, eps=0.1, steps=5, seed=3)
    assert torch.equal(res.x_adv, again.x_adv)
    assert res.info["norm"] == "linf"


@pytest.mark.parametrize("family", ["mlp"])
def test_minimization_attack_returns_the_unclipped_minimum(fitted, digits_test):
    x, y = digits_test.x[:N], digits_test.y[:N]
    res = attacks.get("foolbox:L2DeepFoolAttack").fn(fitted, x, y, steps=20)
    assert res.success.float().mean() > 0.9
    rows = evaluate(fitted, "foolbox:L2DeepFoolAttack", x, y, eps=[0.0, 100.0], steps=20)
    assert rows[0]["fooling_rate"] == 0 and rows[0]["l2_mean"] == 0
    assert rows[1]["l2_mean"] == pytest.approx(float(res.l2.mean()), rel=1e-5)
    assert rows[1]["robust_accuracy"] == pytest.approx(float((res.pred == y).float().mean()))


def test_fixed_attack_needs_eps():
    model = torch.nn.Linear(4, 2)
    x, y = torch.rand(3, 4), torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match="eps"):
        attacks.get("foolbox:LinfPGD").fn(model, x, y)
    assert torch.equal(attacks.get("foolbox:LinfPGD").fn(model, x, y, eps=0.0).x_adv, x)
