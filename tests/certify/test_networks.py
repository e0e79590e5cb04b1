"""IBP, CROWN and MILP on tiny ReLU networks against grids and exact enumeration."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from _certify_nets import exact_margins, grid_margins, lp_margins, tiny_task

from robustkit.certify import certify
from robustkit.certify.crown import margin_bounds, preactivation_bounds
from robustkit.certify.dense import network
from robustkit.certify.layers import ops_of


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.08)])
def test_bounds_are_below_the_grid_minimum_and_crown_above_ibp(norm, eps):
    model, x, y = tiny_task(25)
    ibp = certify(model, x, y, eps=eps, norm=norm, method="ibp", attack_steps=0)
    crown = certify(model, x, y, eps=eps, norm=norm, method="crown", attack_steps=0)
    layers = network(ops_of(model), (2,))
    x0 = x.double()
    bounds = preactivation_bounds(layers, x0, eps, norm)
    margins = margin_bounds(layers, bounds, x0, y, eps, norm)
    for i in range(len(x)):
        truth = grid_margins(model, x[i], int(y[i]), eps, norm)
        assert (margins[i] <= truth + 1e-9).all(), i
    assert (crown.info["margin"] >= ibp.info["margin"] - 1e-9).all()
    assert (crown.info["margin"] > ibp.info["margin"] + 1e-6).any()
    assert crown.certified_accuracy >= ibp.certified_accuracy > 0


def test_milp_agrees_with_enumerating_activation_patterns():
    model, x, y = tiny_task(40)
    eps = 0.05
    r = certify(model, x, y, eps=eps, method="milp", time_limit=20, attack_steps=0)
    assert r.decided_share == 1.0
    checked = 0
    for i in range(len(x)):
        if r.info["decided_by"][i] == "misclassified":
            continue
        exact = exact_margins(model, x[i], int(y[i]), eps)
        if exact is None:
            continue
        checked += 1
        assert bool(r.certified[i]) == bool((exact > 0).all()), (i, exact)
        assert bool(r.broken[i]) == bool((exact < 0).any()), (i, exact)
    assert checked >= 30
    assert r.certified.any() and r.broken.any()
    assert "milp" in r.info["decided_by"]


def test_milp_certifies_what_crown_cannot_on_a_digits_mlp(fitted):
    from _fixtures import digits

    model = fitted("mlp")
    te = digits("test")
    x, y = te.x[:30], te.y[:30]
    crown = certify(model, x, y, eps=0.03, method="crown")
    exact = certify(model, x, y, eps=0.03, method="milp", time_limit=20)
    assert exact.decided_share == 1.0
    assert (exact.certified >= crown.certified).all()
    assert exact.certified_accuracy > crown.certified_accuracy
    assert torch.equal(exact.broken & crown.certified, torch.zeros_like(exact.broken))
    assert np.isfinite(exact.info["solve_seconds"].numpy()).all()


def test_milp_refuses_l2_and_unknown_layers():
    model, x, y = tiny_task(5)
    with pytest.raises(ValueError, match="Linf"):
        certify(model, x, y, eps=0.1, norm="l2", method="milp")
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Sigmoid(), torch.nn.Linear(3, 2))
    with pytest.raises(ValueError, match="Sigmoid"):
        certify(net, x, y % 2, eps=0.1, method="crown")


def test_crown_never_beats_the_lp_relaxation_nor_the_exact_minimum():
    """The independent check of CROWN (auto_LiRPA does not install with torch 2.14):
    CROWN <= LP relaxation with the same pre-activation bounds <= exact minimum."""
    model, x, y = tiny_task(10)
    eps = 0.05
    layers = network(ops_of(model), (2,))
    x0 = x.double()
    crown = margin_bounds(layers, preactivation_bounds(layers, x0, eps, "linf"), x0, y, eps,
                          "linf").numpy()
    gaps = []
    for i in range(len(x)):
        lp = lp_margins(model, x[i], int(y[i]), eps)
        exact = exact_margins(model, x[i], int(y[i]), eps) if i < 5 else None
        assert (crown[i] <= lp + 1e-7).all(), i
        if exact is not None:
            assert (lp <= exact + 1e-7).all(), i
        gaps.append(lp - crown[i])
    assert max(g.max() for g in gaps) > 1e-4  # the relaxations differ somewhere


def test_milp_decides_after_other_code_ran_highs_with_more_threads():
    # HiGHS keeps one thread scheduler per process: a solve elsewhere with 2 threads made
    # every later single-threaded solve fail, which read as "time limit reached"
    highspy = pytest.importorskip("highspy")
    from robustkit.certify.milp_model import quiet_highs

    h = quiet_highs()
    h.setOptionValue("threads", 2)
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = 1, 0
    lp.col_cost_, lp.col_lower_, lp.col_upper_ = [1.0], [0.0], [1.0]
    h.passModel(lp)
    h.run()
    model, x, y = tiny_task(40)
    r = certify(model, x, y, eps=0.05, method="milp", time_limit=20, attack_steps=0)
    assert r.decided_share == 1.0, r.reasons
