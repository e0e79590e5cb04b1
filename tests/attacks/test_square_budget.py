"""Square's budget that follows the samples (the lean chain's), and Square from given
points: stopping a sample early keeps its queries exactly as a full run makes them."""
from __future__ import annotations

import pytest
import torch
from _fixtures import ON_MLP

from robustkit.attacks.square import margin, run_square
from robustkit.attacks.square_budget import MarginFollow

DIGITS_N = 80


def test_follow_keeps_close_and_falling_samples_and_stops_the_others():
    follow = MarginFollow(1000, torch.tensor([10.0, 10.0, 10.0, 10.0]))
    assert follow.points == {20, 60, 100, 200, 400, 600}
    idx = torch.arange(4)
    # margins at 2% of the budget, then at 6%: a close one (<= 0.1 of its clean margin), one
    # falling fast enough to reach 0 in the 940 queries left, one falling too slowly, a flat one
    assert not follow(20, idx, torch.tensor([3.0, 5.0, 5.0, 5.0])).any()
    stop = follow(60, idx, torch.tensor([0.9, 2.0, 4.9, 5.0]))
    assert stop.tolist() == [False, False, True, True]
    # later marks read the samples still searching (rows of idx) by their own clean margin
    follow(100, idx[:2], torch.tensor([3.0, 4.0]))
    assert follow(200, idx[:2], torch.tensor([2.9, 2.0])).tolist() == [True, False]


@ON_MLP
def test_a_followed_run_is_a_prefix_of_the_full_run(mlp, data):
    x, y = data
    keep = mlp(x).argmax(1) == y
    x, y = x[keep], y[keep]
    kw = {"eps": 0.06, "norm": "linf", "queries": 400, "p_init": 0.8, "seed": 3}
    with torch.no_grad():
        m_x = margin(mlp(x), y)
    full = run_square(mlp, x, y, **kw)
    part = run_square(mlp, x, y, **kw, follow=MarginFollow(400, m_x))
    q_full, q_part = full.info["queries"], part.info["queries"]
    stopped = q_part < q_full
    assert int(stopped.sum()) >= 5 and int((~stopped).sum()) >= 5
    assert not bool(part.success[stopped].any())
    assert bool((q_part <= q_full).all())
    # the samples never stopped made the same queries and end at the same point
    assert torch.equal(part.x_adv[~stopped], full.x_adv[~stopped])
    assert torch.equal(part.success[~stopped], full.success[~stopped])
    # the budget was spent where the margin was falling: fewer queries in all
    assert int(q_part.sum()) < int(q_full.sum())


@ON_MLP
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_square_from_given_points_stays_in_the_ball(mlp, data, norm):
    x, y = data
    eps = 0.05 if norm == "linf" else 0.5
    far = (x + 3 * eps * torch.randn(x.shape, generator=torch.Generator().manual_seed(0)))
    res = run_square(mlp, x, y, eps=eps, norm=norm, queries=30, p_init=0.8, seed=0,
                     start=far.clamp(0, 1))
    size = res.linf if norm == "linf" else res.l2
    assert float(size.max()) <= eps + 1e-5
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1


@ON_MLP
def test_square_from_an_adversarial_point_stops_at_once(mlp, data):
    x, y = data
    with torch.no_grad():
        pred = mlp(x).argmax(1)
    other = x[torch.roll(torch.arange(len(x)), 1)]
    with torch.no_grad():
        wrong = (mlp(other).argmax(1) != y) & (pred == y)
    i = wrong.nonzero().squeeze(1)[:10]
    assert len(i) >= 5
    # eps 1 in Linf: the ball holds every image, so the other image is a valid start
    res = run_square(mlp, x[i], y[i], eps=1.0, norm="linf", queries=50, p_init=0.8, seed=0,
                     start=other[i])
    assert bool(res.success.all())
    assert torch.equal(res.x_adv, other[i]) and res.info["queries"].tolist() == [2] * len(i)
