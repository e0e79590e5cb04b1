"""Every registered certificate (randomized smoothing aside) on a tiny ReLU network and a
tiny affine model: sound against a grid of each certified ball and PGD, witnesses
verified, misclassified inputs broken, exact methods deciding every input."""
from __future__ import annotations

import pytest
import torch
from _certify_nets import grid_margins, tiny_linear, tiny_net

from robustkit import load_dataset
from robustkit.attacks.pgd import pgd
from robustkit.certify import certify, check_against_attack, get, names, verify_witness

METHODS = [n for n in names() if not get(n).smoothed]
MODELS = {"relu_net": tiny_net, "affine": tiny_linear}
EPS = {"linf": (0.03, 0.08), "l2": (0.05, 0.12)}


@pytest.mark.parametrize("norm", sorted(EPS))
@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("method", METHODS)
def test_certificate_contract(method, kind, norm):
    model = MODELS[kind]()
    te = load_dataset("blobs", "test", seed=0)
    x, y = te.x[:30], te.y[:30]
    spec = get(method)
    why = spec.applies(model, norm)
    if why is not None:
        assert isinstance(why, str) and why
        with pytest.raises(ValueError, match="does not apply"):
            certify(model, x, y, eps=0.1, norm=norm, method=method)
        return
    results = certify(model, x, y, eps=list(EPS[norm]), norm=norm, method=method,
                      time_limit=10)
    assert [r.eps for r in results] == list(EPS[norm])
    with torch.no_grad():
        wrong = model(x).argmax(1) != y
    for r in results:
        assert r.method == method and len(r.status) == len(x) == len(r.reasons)
        assert not (r.certified & r.broken).any()
        assert r.broken[wrong].all() and torch.equal(r.x_adv[wrong], x[wrong])
        assert verify_witness(model, x, y, r.x_adv, r.eps, norm)[r.broken].all()
        assert all(reason for reason, u in zip(r.reasons, r.unknown.tolist()) if u)
        assert (r.radius[r.certified] >= r.eps * (1 - 1e-9)).all()
        assert (r.seconds >= 0).all()
        if spec.exact:
            assert r.decided_share == 1.0
        idx = r.certified.nonzero().flatten()
        assert len(idx) > 0
        for i in idx.tolist():  # no grid point of a certified ball is adversarial
            assert (grid_margins(model, x[i], int(y[i]), r.eps, norm, steps=61) > 0).all(), i
        attack = pgd(model, x, y, eps=r.eps, norm=norm, steps=40, restarts=3, seed=1)
        check_against_attack(r, attack.success, attack.x_adv, model=model, x=x, y=y)


def test_auto_picks_the_exact_method_that_applies():
    from robustkit.certify import choose

    assert choose(tiny_linear(), "linf")[0].name == "linear"
    assert choose(tiny_linear(), "l2")[0].name == "linear"
    spec, reasons = choose(tiny_net(), "linf")
    assert spec.name == "milp" and any(r.startswith("linear:") for r in reasons)
    assert choose(tiny_net(), "l2")[0].name == "crown"
