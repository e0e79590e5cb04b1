"""The LP (triangle) relaxation on tiny ReLU networks: between CROWN and the exact minimum,
its LP-tightened bounds sound, and the "lp" method between "crown" and "milp"."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from _certify_nets import exact_margins, lp_margins, tiny_task

from robustkit.certify import certify
from robustkit.certify.bounds import input_box
from robustkit.certify.crown import margin_bounds, preactivation_bounds
from robustkit.certify.dense import network
from robustkit.certify.layers import ops_of
from robustkit.certify.lp_bounds import pair_minima, tighten

EPS = 0.1


def _sample(layers, x, eps):
    x0 = x.double().flatten()
    hidden = [(lo[0], hi[0]) for lo, hi in preactivation_bounds(layers, x0[None], eps, "linf")]
    return x0, hidden, *input_box(x0, eps)


def test_lp_minima_sit_between_crown_and_the_exact_minimum():
    model, x, y = tiny_task(6)
    layers = network(ops_of(model), (2,))
    gain = []
    for i in range(len(x)):
        x0, hidden, lo, hi = _sample(layers, x[i], EPS)
        crown = margin_bounds(layers, [(a[None], b[None]) for a, b in hidden], x0[None],
                              y[i:i + 1], EPS, "linf")[0].numpy()
        lp = pair_minima(layers, hidden, lo, hi, int(y[i]))
        lp_all = pair_minima(layers, tighten(layers, hidden, lo, hi, deadline=np.inf),
                             lo, hi, int(y[i]))
        exact = exact_margins(model, x[i], int(y[i]), EPS, max_unstable=12)
        np.testing.assert_allclose(lp, lp_margins(model, x[i], int(y[i]), EPS), atol=1e-6)
        assert (crown <= lp + 1e-7).all() and (lp <= lp_all + 1e-7).all(), i
        assert exact is not None and (lp_all <= exact + 1e-7).all(), (i, lp_all, exact)
        gain.append((lp_all - lp).max())
    assert max(gain) > 1e-2  # tightening the bounds tightens the relaxation somewhere


def test_tightened_bounds_lie_inside_and_hold_on_points_of_the_box():
    model, x, _ = tiny_task(4)
    layers = network(ops_of(model), (2,))
    gen = torch.Generator().manual_seed(0)
    shrunk = 0.0
    for i in range(len(x)):
        x0, hidden, lo, hi = _sample(layers, x[i], 0.2)
        tight = tighten(layers, hidden, lo, hi, deadline=np.inf)
        assert tight is not None and len(tight) == len(hidden)
        points = lo + (hi - lo) * torch.rand(2000, len(x0), generator=gen, dtype=torch.float64)
        h = points
        for (w, b), (l0, u0), (l1, u1) in zip(layers[:-1], hidden, tight):
            z = h @ w.T + b
            assert (l1 >= l0 - 1e-12).all() and (u1 <= u0 + 1e-12).all()
            assert (z >= l1 - 1e-9).all() and (z <= u1 + 1e-9).all()
            h = z.clamp_min(0)
            shrunk += float((u0 - l0).sum() - (u1 - l1).sum())
    assert shrunk > 0.1


@pytest.mark.parametrize("bounds", ["crown", "lp"])
def test_lp_certifies_at_least_crown_and_never_more_than_milp(bounds):
    model, x, y = tiny_task(40)
    crown = certify(model, x, y, eps=EPS, method="crown", attack_steps=0)
    lp = certify(model, x, y, eps=EPS, method="lp", bounds=bounds, attack_steps=0)
    exact = certify(model, x, y, eps=EPS, method="milp", bounds=bounds, time_limit=20,
                    attack_steps=0)
    assert exact.decided_share == 1.0 and lp.info["bounds"] == bounds
    assert (lp.certified >= crown.certified).all() and (exact.certified >= lp.certified).all()
    assert not (lp.certified & exact.broken).any()
    assert lp.certified_accuracy < exact.certified_accuracy  # the relaxation is loose here
    assert "lp" in lp.info["decided_by"]
    assert all("LP relaxation" in r or "time limit" in r for r, u in
               zip(lp.reasons, lp.unknown.tolist()) if u)


def test_lp_refuses_l2_and_an_unknown_bounds_source():
    model, x, y = tiny_task(5)
    with pytest.raises(ValueError, match="Linf"):
        certify(model, x, y, eps=0.1, norm="l2", method="lp")
    with pytest.raises(ValueError, match="bounds='dual'"):
        certify(model, x, y, eps=0.1, method="lp", bounds="dual")


def test_programs_solve_after_a_default_threaded_highs_ran_in_the_process():
    """HiGHS refuses to run an instance whose thread count differs from its process-wide
    pool's; a default-threaded solve (the test helper's) must not break ours after it."""
    model, x, y = tiny_task(3)
    layers = network(ops_of(model), (2,))
    for i in range(len(x)):
        expected = lp_margins(model, x[i], int(y[i]), EPS)  # default threads
        _, hidden, lo, hi = _sample(layers, x[i], EPS)
        np.testing.assert_allclose(pair_minima(layers, hidden, lo, hi, int(y[i])), expected,
                                   atol=1e-6)
    lp_margins(model, x[0], int(y[0]), EPS)
    exact = certify(model, x, y, eps=EPS, method="milp", attack_steps=0, time_limit=20)
    assert exact.decided_share == 1.0
