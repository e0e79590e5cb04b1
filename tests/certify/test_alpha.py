"""alpha-CROWN: between CROWN and the LP relaxation (same hidden bounds), below the exact
minimum, and a registered method that certifies at least what CROWN certifies."""
from __future__ import annotations

import pytest
import torch
from _certify_nets import exact_margins, grid_margins, lp_margins, tiny_task

from robustkit.certify import certify
from robustkit.certify.alpha import alpha_margins
from robustkit.certify.crown import margin_bounds, preactivation_bounds
from robustkit.certify.dense import network
from robustkit.certify.layers import ops_of


def test_alpha_crown_lies_between_crown_and_the_lp_relaxation_and_below_the_exact_minimum():
    """With CROWN's hidden bounds kept (``hidden=False``) no linear relaxation beats the LP
    over those bounds; optimizing the hidden bounds too may pass it, never the exact
    minimum (enumeration)."""
    model, x, y = tiny_task(12)
    eps = 0.06
    layers = network(ops_of(model), (2,))
    x0 = x.double()
    bounds = preactivation_bounds(layers, x0, eps, "linf")
    crown = margin_bounds(layers, bounds, x0, y, eps, "linf")
    final_only = alpha_margins(layers, bounds, x0, y, eps, "linf", hidden=False)
    full = alpha_margins(layers, bounds, x0, y, eps, "linf")
    assert (final_only >= crown).all() and (full >= crown).all()
    closed, gap = 0.0, 0.0
    for i in range(len(x)):
        lp = torch.as_tensor(lp_margins(model, x[i], int(y[i]), eps))
        assert (final_only[i] <= lp + 1e-7).all(), i
        exact = exact_margins(model, x[i], int(y[i]), eps) if i < 8 else None
        if exact is not None:
            assert (full[i] <= torch.as_tensor(exact) + 1e-7).all(), i
        closed += float((final_only[i] - crown[i]).sum())
        gap += float((lp - crown[i]).sum())
    assert gap > 1e-3 and closed > 0.3 * gap  # the slopes move toward the LP's optimum


@pytest.mark.parametrize("norm,eps", [("linf", 0.06), ("l2", 0.1)])
def test_alpha_crown_method_is_sound_and_at_least_crown(norm, eps):
    model, x, y = tiny_task(30)
    crown = certify(model, x, y, eps=eps, norm=norm, method="crown", attack_steps=0)
    alpha = certify(model, x, y, eps=eps, norm=norm, method="alpha-crown", attack_steps=0)
    assert (alpha.info["margin"] >= crown.info["margin"]).all()
    assert (alpha.certified >= crown.certified).all()
    assert torch.equal(alpha.info["unstable"], crown.info["unstable"])
    for i in alpha.certified.nonzero().flatten().tolist():
        assert (grid_margins(model, x[i], int(y[i]), eps, norm, steps=61) > 0).all(), i
    zero = certify(model, x, y, eps=eps, norm=norm, method="alpha-crown", steps=0,
                   attack_steps=0)
    assert torch.equal(zero.info["margin"], crown.info["margin"])


def test_alpha_crown_refuses_bad_steps():
    model, x, y = tiny_task(3)
    with pytest.raises(ValueError, match="steps"):
        certify(model, x, y, eps=0.1, method="alpha-crown", steps=-1)
