"""The contract every registered attack keeps on every model family.

Parametrized over ``attacks.names()`` x families, so a new attack or family is tested
without new test code: outputs in [0, 1], inside the eps ball of the attack's norm (fixed
attacks; a universal attack's v), shape/device/dtype kept, the model untouched, eps=0
the identity, deterministic for a seed.
"""
from __future__ import annotations

import pytest
import torch

from robustkit import attacks, models
from robustkit.evaluate import evaluate

EPS = {"linf": 0.1, "l2": 1.0}
# Fewer iterations where an attack's defaults are slow; the contract does not depend on them.
FAST = {"pgd": {"steps": 3}, "pgd_l2": {"steps": 3}, "deepfool": {"max_iter": 10},
        "deepfool_linf": {"max_iter": 10}, "patch": {"location": "worst", "k": 3},
        "uap": {"max_passes": 1, "deepfool_iter": 5, "candidates": 3},
        "uap_l2": {"max_passes": 1, "deepfool_iter": 5, "candidates": 3}, "uap_sgd": {"epochs": 2},
        "uap_sgd_l2": {"epochs": 2}, "apgd": {"steps": 5}, "apgd_l2": {"steps": 5},
        "apgd_t": {"steps": 3, "targets": 2}, "square": {"queries": 30},
        "square_l2": {"queries": 30},
        "autoattack": {"steps": 3, "targets": 2, "queries": 20},
        "autoattack_l2": {"steps": 3, "targets": 2, "queries": 20},
        "fab": {"steps": 10}, "fab_l2": {"steps": 10}}
# The foolbox bridge (``foolbox:<Class>``, resolved on demand, so not in names()): fixed
# Linf and L2 attacks and minimal ones of both norms.
FOOLBOX = ["foolbox:LinfPGD", "foolbox:L2PGD", "foolbox:FGSM", "foolbox:L2FastGradientAttack",
           "foolbox:L2BasicIterativeAttack", "foolbox:LinfDeepFoolAttack",
           "foolbox:L2DeepFoolAttack"]
FAST.update({"foolbox:LinfPGD": {"steps": 3}, "foolbox:L2PGD": {"steps": 3},
             "foolbox:L2BasicIterativeAttack": {"steps": 3},
             "foolbox:LinfDeepFoolAttack": {"steps": 10},
             "foolbox:L2DeepFoolAttack": {"steps": 10}})
NAMES = attacks.names() + FOOLBOX
N = 32
TOL = 1e-5


@pytest.fixture()
def fitted(request, family):
    if family not in models.names():
        pytest.skip(f"model family {family!r} is not registered yet")
    return request.getfixturevalue("model")


@pytest.fixture(scope="module")
def data(digits_test):
    return digits_test.x[:N], digits_test.y[:N]


def _run(spec, model, x, y, eps, seed=0):
    return spec.fn(model, x, y, eps=eps, seed=seed, **FAST.get(spec.name, {}))


_FIRST: dict = {}


def _first_run(spec, model, x, y, family):
    """The seed-7 run at the attack's eps, cached so the determinism test can reuse it."""
    key = (family, spec.name)
    if key not in _FIRST:
        _FIRST[key] = _run(spec, model, x, y, EPS[spec.norm], seed=7)
    return _FIRST[key]


def _norm(t: torch.Tensor, norm: str) -> torch.Tensor:
    flat = t.reshape(len(t), -1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


@pytest.mark.parametrize("name", NAMES)
def test_output_in_box_and_ball_with_shape_device_dtype(fitted, family, data, name):
    spec = attacks.get(name)
    x, y = data
    eps = EPS[spec.norm]
    res = _first_run(spec, fitted, x, y, family)
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == x.dtype
    assert res.x_adv.device == x.device
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
    assert torch.allclose(res.delta, res.x_adv - x)
    for t in (res.success, res.l2, res.linf, res.iterations):
        assert t.shape == (N,)
    assert res.success.dtype == torch.bool
    if spec.kind == "fixed":
        assert float(_norm(res.delta, spec.norm).max()) <= eps + TOL
    if spec.kind == "universal":
        v = torch.as_tensor(res.info["v"]).reshape(1, *x.shape[1:])
        assert float(_norm(v, spec.norm).max()) <= eps + TOL


@pytest.mark.parametrize("name", NAMES)
def test_model_left_untouched(fitted, data, name):
    spec = attacks.get(name)
    x, y = data
    params = [p.detach().clone() for p in fitted.parameters()]
    buffers = [b.detach().clone() for b in fitted.buffers()]
    grads = [None if p.grad is None else p.grad.clone() for p in fitted.parameters()]
    flags = [p.requires_grad for p in fitted.parameters()]
    fitted.train()
    try:
        _run(spec, fitted, x, y, EPS[spec.norm])
        assert all(m.training for m in fitted.modules())
    finally:
        fitted.eval()
    assert all(torch.equal(a, b) for a, b in zip(params, fitted.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(buffers, fitted.buffers()))
    assert flags == [p.requires_grad for p in fitted.parameters()]
    for g, p in zip(grads, fitted.parameters()):
        assert (g is None and p.grad is None) or torch.equal(g, p.grad)


@pytest.mark.parametrize("name", NAMES)
def test_eps_zero_is_identity(fitted, data, name):
    spec = attacks.get(name)
    x, y = data
    if spec.kind == "fixed":
        assert torch.equal(_run(spec, fitted, x, y, 0.0).x_adv, x)
    elif spec.kind == "universal":
        v = torch.as_tensor(_run(spec, fitted, x, y, 0.0).info["v"])
        assert torch.count_nonzero(v) == 0
    else:  # minimal: eps is a budget applied by evaluation
        (row,) = evaluate(fitted, spec, x, y, eps=[0.0], **FAST.get(name, {}))
        assert row["l2_mean"] == 0 and row["fooling_rate"] == 0
        assert row["robust_accuracy"] == row["clean_accuracy"]


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_for_a_seed(fitted, family, data, name):
    spec = attacks.get(name)
    x, y = data
    a = _first_run(spec, fitted, x, y, family)
    b = _run(spec, fitted, x, y, EPS[spec.norm], seed=7)
    assert torch.equal(a.x_adv, b.x_adv)
    assert torch.equal(a.success, b.success)
