"""Universal perturbations: the issue's 80% acceptance bar, Algorithm 1 at batch_size=1,
the fooling-rate definition, the xi ball, seeds, every family, the registry wrappers."""
from __future__ import annotations

import pytest
import torch

from robustkit import attacks
from robustkit.attacks.base import project
from robustkit.attacks.deepfool import deepfool
from robustkit.attacks.universal import UAPResult, fooling_rate, uap, uap_sgd

FITS = {"uap": uap, "uap_sgd": uap_sgd}


def _pred(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


@pytest.mark.parametrize("family", ["mlp", "cnn"])
@pytest.mark.parametrize("method", sorted(FITS))
def test_fools_80_percent_of_held_out_digits_at_linf_03(model, digits_train, digits_test,
                                                        method):
    res = FITS[method](model, digits_train.x, digits_train.y, xi=0.3, x_val=digits_test.x)
    assert res.fooling_rate_val is not None and res.fooling_rate_val >= 0.8
    assert res.fooling_rate >= 0.8 and res.converged
    assert float(res.v.abs().max()) <= 0.3 + 1e-6
    assert res.v.shape == digits_train.x.shape[1:] and res.v.dtype == digits_train.x.dtype
    assert [h["pass"] for h in res.history] == list(range(1, res.passes + 1))
    assert res.history[-1]["fooling_rate_val"] is not None
    assert all(h["linf"] <= 0.3 + 1e-6 for h in res.history)


@pytest.mark.parametrize("family", ["mlp"])
def test_batch_size_one_is_algorithm_1(model, digits_train):
    """A literal per-sample loop of Algorithm 1 gives the same v."""
    x, y, xi = digits_train.x[:40], digits_train.y[:40], 0.3
    res = uap(model, x, y, xi=xi, batch_size=1, max_passes=2, delta=0.0, seed=5)
    clean = _pred(model, x)
    gen = torch.Generator().manual_seed(5)
    v = torch.zeros_like(x[0])
    for _ in range(2):
        for i in torch.randperm(len(x), generator=gen).tolist():
            start = (x[i:i + 1] + v).clamp(0, 1)
            if _pred(model, start) == clean[i]:
                step = deepfool(model, start, clean[i:i + 1], max_iter=10, refine=0,
                                box="mask")
                if step.success.all():
                    v = project(v[None] + step.delta, xi, "linf")[0]
    assert torch.allclose(res.v, v, atol=1e-6)
    assert res.passes == 2 and res.fooling_rate > 0.1
    assert all(h["accepted"] == 1.0 for h in res.history)


@pytest.mark.parametrize("family", ["mlp"])
def test_fooling_rate_counts_changes_of_prediction_not_of_label(model, digits_train):
    x = digits_train.x[:200]
    clean = _pred(model, x)
    wrong = (clean + 1) % 10  # every label wrong: misclassified, yet nothing is fooled
    for fit in (uap, uap_sgd):
        res = fit(model, x, wrong, xi=0.0)
        assert torch.count_nonzero(res.v) == 0 and res.passes == 0
        assert res.fooling_rate == 0.0 and res.misclassification_rate == 1.0
    res = uap_sgd(model, x, wrong, xi=0.3, epochs=2)
    adv = _pred(model, (x + res.v).clamp(0, 1))
    assert res.fooling_rate == pytest.approx(float((adv != clean).float().mean()))
    assert res.misclassification_rate == pytest.approx(float((adv != wrong).float().mean()))
    assert res.fooling_rate != res.misclassification_rate
    assert fooling_rate(model, x, res.v, clean) == pytest.approx(res.fooling_rate)


@pytest.mark.parametrize("family", ["mlp"])
@pytest.mark.parametrize("method", sorted(FITS))
def test_l2_ball_and_seeded_determinism(model, digits_train, method):
    x, y = digits_train.x[:128], digits_train.y[:128]
    kw = {"max_passes": 2} if method == "uap" else {"epochs": 3, "batch_size": 32}
    a = FITS[method](model, x, y, xi=1.5, norm="l2", seed=1, **kw)
    b = FITS[method](model, x, y, xi=1.5, norm="l2", seed=1, **kw)
    c = FITS[method](model, x, y, xi=1.5, norm="l2", seed=2, **kw)
    assert float(a.v.norm()) <= 1.5 + 1e-5 and a.fooling_rate > 0.2
    assert torch.equal(a.v, b.v) and a.history[-1]["fooling_rate"] == b.history[-1]["fooling_rate"]
    assert not torch.equal(a.v, c.v)


@pytest.mark.parametrize("family", ["mlp"])
def test_sgd_with_normalized_gradient_steps(model, digits_train):
    x, y = digits_train.x[:256], digits_train.y[:256]
    res = uap_sgd(model, x, y, xi=2.0, norm="l2", sign=False, lr=0.2, epochs=4, batch_size=32)
    assert float(res.v.norm()) <= 2.0 + 1e-5 and res.fooling_rate > 0.3
    assert res.history[0]["l2"] <= 0.2 * 8 + 1e-5  # 8 steps of length 0.2


@pytest.mark.parametrize("family", ["mlp"])
def test_targeted_sgd_moves_inputs_to_the_target(model, digits_train):
    x, y = digits_train.x[:400], digits_train.y[:400]
    res = uap_sgd(model, x, y, xi=0.3, target=3, epochs=5, delta=0.5)
    hit = _pred(model, (x + res.v).clamp(0, 1)) == 3
    assert res.target_rate == pytest.approx(float(hit.float().mean()))
    assert res.target_rate > 0.5 and res.converged
    assert "target_rate" in res.history[-1]


def test_every_family(model, digits_train, digits_test):
    x, y = digits_train.x[:128], digits_train.y[:128]
    for fit, kw in ((uap, {"max_passes": 1}), (uap_sgd, {"epochs": 5, "batch_size": 32})):
        res = fit(model, x, y, xi=0.3, x_val=digits_test.x[:64], **kw)
        assert isinstance(res, UAPResult) and res.v.shape == x.shape[1:]
        assert float(res.v.abs().max()) <= 0.3 + 1e-6
        assert 0 < res.fooling_rate <= 1 and 0 <= res.fooling_rate_val <= 1
        assert res.passes == len(res.history) >= 1 and res.seconds > 0


@pytest.mark.parametrize("family", ["mlp"])
def test_registry_wrappers_fit_on_fit_x_and_apply_to_x(model, digits_train, digits_test):
    fx, fy = digits_train.x[:300], digits_train.y[:300]
    x, y = digits_test.x[:50], digits_test.y[:50]
    for name, norm in (("uap", "linf"), ("uap_l2", "l2"), ("uap_sgd", "linf"),
                       ("uap_sgd_l2", "l2")):
        spec = attacks.get(name)
        assert (spec.kind, spec.norm) == ("universal", norm)
        eps = 0.3 if norm == "linf" else 1.5
        kw = {"epochs": 2} if name.startswith("uap_sgd") else {"max_passes": 1}
        res = spec.fn(model, x, y, eps=eps, fit_x=fx, fit_y=fy, seed=0, **kw)
        v, fit = res.info["v"], res.info["uap"]
        assert isinstance(fit, UAPResult) and torch.equal(v, fit.v)
        assert torch.equal(res.x_adv, (x + v).clamp(0, 1))
        assert fit.fooling_rate == pytest.approx(fooling_rate(model, fx, v, _pred(model, fx)))
    with pytest.raises(ValueError, match="fit_x and fit_y"):
        attacks.get("uap").fn(model, x, y, eps=0.3, fit_x=fx)


@pytest.mark.parametrize("family", ["linear"])
def test_bad_arguments_raise_naming_the_parameter(model, digits_train):
    x, y = digits_train.x[:20], digits_train.y[:20]
    for fit in (uap, uap_sgd):
        for kw, word in (({"xi": -0.1}, "xi"), ({"xi": 0.1, "norm": "l1"}, "norm"),
                         ({"xi": 0.1, "delta": 1.5}, "delta"),
                         ({"xi": 0.1, "batch_size": 0}, "batch_size"),
                         ({"xi": 0.1, "x_val": x[:, 0]}, "x_val")):
            with pytest.raises(ValueError, match=word):
                fit(model, x, y, **kw)
    for kw, word in (({"target": 10}, "target"), ({"lr": 0.0}, "lr"), ({"beta": 0}, "beta"),
                     ({"epochs": -1}, "epochs")):
        with pytest.raises(ValueError, match=word):
            uap_sgd(model, x, y, xi=0.1, **kw)
    for kw, word in (({"max_passes": -1}, "max_passes"), ({"deepfool_iter": 0}, "deepfool_iter"),
                     ({"probe_size": 0}, "probe_size")):
        with pytest.raises(ValueError, match=word):
            uap(model, x, y, xi=0.1, **kw)
