"""FGSM / FGM: closed-form answers on linear models, targeting, random start, fast path."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from robustkit.attacks.fgsm import ascent_direction, fgm, fgsm


def _linear(d: int = 6, k: int = 4, seed: int = 0) -> nn.Linear:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Linear(d, k)


def _ce_grad(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, label: torch.Tensor
             ) -> torch.Tensor:
    """Closed form d CE(Wx + b, label) / dx = W^T (softmax(Wx + b) - onehot(label)), float64."""
    w, b, x = w.double(), b.double(), x.double()
    p = torch.softmax(x @ w.T + b, dim=1)
    return (p - torch.eye(w.shape[0], dtype=torch.float64)[label]) @ w


def test_fgsm_on_linear_model_matches_closed_form():
    model = _linear()
    x = torch.rand(50, 6, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 4, (50,), generator=torch.Generator().manual_seed(2))
    g = _ce_grad(model.weight.detach(), model.bias.detach(), x, y)
    expected = (x.double() + 0.1 * g.sign()).clamp(0, 1).float()
    got = fgsm(model, x, y, eps=0.1).x_adv
    clear = g.abs() > 1e-6  # where the sign is not a rounding question
    assert clear.float().mean() > 0.9
    assert torch.allclose(got[clear], expected[clear], atol=1e-6)


@pytest.mark.parametrize("family", ["linear"])  # conftest's cached `model` fixture
def test_fgsm_on_fitted_linear_family_matches_closed_form(model, digits_test):
    x, y = digits_test.x[:64], digits_test.y[:64]
    # logits = W (x - mean) / scale + b: the input gradient is W^T (p - e_y) / scale
    w = model.linear.weight.detach().double() / model.standardize.scale.double()
    with torch.no_grad():
        p = torch.softmax(model(x).double(), dim=1)
    g = ((p - torch.eye(10, dtype=torch.float64)[y]) @ w).reshape(x.shape)
    expected = (x.double() + 0.05 * g.sign()).clamp(0, 1).float()
    got = fgsm(model, x, y, eps=0.05).x_adv
    clear = g.abs() > 1e-7
    assert torch.allclose(got[clear], expected[clear], atol=1e-6)


def test_targeted_fgsm_descends_toward_target():
    model = _linear()
    x = torch.rand(40, 6, generator=torch.Generator().manual_seed(3))
    y = torch.zeros(40, dtype=torch.long)
    target = torch.full((40,), 2, dtype=torch.long)
    g = _ce_grad(model.weight.detach(), model.bias.detach(), x, target)
    expected = (x.double() - 0.1 * g.sign()).clamp(0, 1).float()
    res = fgsm(model, x, y, eps=0.1, target=target)
    clear = g.abs() > 1e-6
    assert torch.allclose(res.x_adv[clear], expected[clear], atol=1e-6)
    with torch.no_grad():
        before = torch.log_softmax(model(x), 1)[:, 2]
        after = torch.log_softmax(model(res.x_adv), 1)[:, 2]
    assert (after >= before - 1e-6).all()
    assert torch.equal(res.success, res.pred == target)


def test_fgm_is_an_l2_step_along_the_normalized_gradient():
    model = _linear()
    x = 0.3 + 0.4 * torch.rand(20, 6, generator=torch.Generator().manual_seed(4))
    y = torch.randint(0, 4, (20,), generator=torch.Generator().manual_seed(5))
    g = _ce_grad(model.weight.detach(), model.bias.detach(), x, y)
    expected = x.double() + 0.1 * g / g.norm(dim=1, keepdim=True)
    res = fgm(model, x, y, eps=0.1)
    assert torch.allclose(res.x_adv.double(), expected, atol=1e-6)
    assert torch.allclose(res.l2, torch.full((20,), 0.1), atol=1e-6)


def test_fgm_zero_and_tiny_gradients_give_finite_steps():
    model = _linear(6, 3)
    nn.init.zeros_(model.weight)
    x, y = torch.full((4, 6), 0.5), torch.zeros(4, dtype=torch.long)
    assert torch.equal(fgm(model, x, y, eps=0.5).x_adv, x)
    tiny = torch.tensor([[1e-30, -2e-30, 0.0]])
    d = ascent_direction(tiny, "l2")
    assert torch.allclose(d.norm(), torch.tensor(1.0)) and d[0, 0] > 0 > d[0, 1]


def test_random_start_stays_in_ball_and_depends_on_seed(digits_test):
    model = nn.Sequential(nn.Flatten(), _linear(64, 10))
    x, y = digits_test.x[:30], digits_test.y[:30]
    a = fgsm(model, x, y, eps=0.1, random_start=True, seed=1)
    b = fgsm(model, x, y, eps=0.1, random_start=True, seed=1)
    c = fgsm(model, x, y, eps=0.1, random_start=True, seed=2)
    assert torch.equal(a.x_adv, b.x_adv) and not torch.equal(a.x_adv, c.x_adv)
    assert float(a.linf.max()) <= 0.1 + 1e-6
    r = fgm(model, x, y, eps=0.5, random_start=True, seed=1)
    assert float(r.l2.max()) <= 0.5 + 1e-5 and float(r.x_adv.min()) >= 0


def test_eps_zero_returns_x_bitwise_and_predict_false_skips_prediction(digits_test):
    model = nn.Sequential(nn.Flatten(), _linear(64, 10))
    x, y = digits_test.x[:10], digits_test.y[:10]
    assert torch.equal(fgsm(model, x, y, eps=0).x_adv, x)
    assert torch.equal(fgsm(model, x, y, eps=0.0, random_start=True).x_adv, x)
    fast = fgsm(model, x, y, eps=0.1, predict=False)
    full = fgsm(model, x, y, eps=0.1)
    assert fast.pred is None and not fast.success.any()
    assert torch.equal(fast.x_adv, full.x_adv)
    assert torch.equal(full.pred, model(full.x_adv).argmax(1))


@pytest.mark.parametrize("kw, match", [
    ({"eps": -0.1}, "eps"), ({"eps": float("nan")}, "eps"), ({"eps": 0.1, "alpha": -1}, "alpha"),
    ({"eps": 0.1, "target": torch.zeros(3, dtype=torch.long)}, "target"),
])
def test_bad_arguments_name_the_parameter(kw, match):
    model = _linear()
    x, y = torch.rand(5, 6), torch.zeros(5, dtype=torch.long)
    with pytest.raises(ValueError, match=match):
        fgsm(model, x, y, **kw)
    with pytest.raises(ValueError, match="x must lie in"):
        fgsm(model, x + 2, y, eps=0.1)


@pytest.mark.parametrize("targeted", [False, True])
def test_logit_direction_is_the_float64_gradient_up_to_a_positive_factor(targeted):
    from robustkit.attacks.fgsm import ascent_loss, ce_input_direction, ce_logit_direction

    gen = torch.Generator().manual_seed(3)
    # every other row saturated: logit margins of ~100, where float32 rounds p_y to 1
    scale = torch.tensor([1.0, 40.0]).repeat(32)[:, None]
    logits = torch.randn(64, 10, generator=gen) * scale
    y = torch.randint(0, 10, (64,), generator=gen)
    target = torch.randint(0, 10, (64,), generator=gen) if targeted else None
    # The exact gradient in float64: p - onehot(c) with p_c - 1 written as -sum_{j != c} p_j
    # (autograd's p_c - 1 cancels to 0 once p_c rounds to 1, in float64 too).
    c = y if target is None else target
    p = logits.double().softmax(1)
    exact = p.scatter(1, c[:, None], 0.0)
    exact = exact.scatter(1, c[:, None], -exact.sum(1, keepdim=True))
    exact = exact if target is None else -exact
    got = ce_logit_direction(logits, y, target)
    assert got.dtype == logits.dtype and not got.requires_grad
    # got = exact / S per row, S = the row's sum over the classes other than c
    factor = 1 / p.scatter(1, c[:, None], 0.0).sum(1, keepdim=True)
    ref = exact * factor
    big = ref.abs() > 1e-30  # smaller entries underflow in float32 (ours: 0 or denormal)
    assert torch.allclose(got.double()[big], ref[big], rtol=1e-4, atol=0)
    assert (got.double()[~big].abs() < 1e-30).all()
    # where float32 autograd is exact (unsaturated rows), the same direction up to rounding
    z32 = logits.clone().requires_grad_(True)
    (g32,) = torch.autograd.grad(ascent_loss(z32, y, target).sum(), z32)
    unsat = scale.squeeze(1) == 1
    assert torch.allclose(got[unsat] * (1 / factor[unsat]).float(), g32[unsat], atol=1e-6)

    model = _linear(d=6, k=10)
    x = torch.rand(64, 6, generator=gen)
    xg = x.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(ascent_loss(model(xg), y, target).sum(), xg)
    direction, out = ce_input_direction(model, x, y, target)
    assert torch.equal(direction.sign(), gx.sign())  # unsaturated: autograd's signs
    assert torch.equal(out, model(x).detach())
    assert all(p.grad is None for p in model.parameters())


def test_fgsm_follows_the_exact_gradient_where_float32_cross_entropy_saturates():
    model = _linear(d=6, k=4)
    with torch.no_grad():
        model.weight.mul_(300)  # margins of hundreds: p_y == 1 in float32
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(200, 6, generator=gen)
    y = model(x).argmax(1).detach()  # correctly classified, confidently
    assert (model(x).softmax(1).max(1).values == 1).float().mean() > 0.5
    # exact float64 gradient: p_y - 1 written as -sum_{j != y} p_j (no cancellation)
    w, b = model.weight.detach().double(), model.bias.detach().double()
    p = torch.softmax(x.double() @ w.T + b, dim=1).scatter(1, y[:, None], 0.0)
    exact = (p.scatter(1, y[:, None], -p.sum(1, keepdim=True)) @ w).sign()
    ours = fgsm(model, x, y, eps=0.05).x_adv
    assert torch.allclose(ours, (x.double() + 0.05 * exact).clamp(0, 1).float(), atol=1e-6)
    # autograd through float32 cross-entropy gets other signs on the saturated samples
    xg = x.clone().requires_grad_(True)
    (g32,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(xg), y,
                                                                    reduction="sum"), xg)
    assert (g32.sign() != exact.float()).any(1).float().mean() > 0.3
