"""PGD: stronger than FGSM, restarts keep the per-sample worst case, margin loss, targeting."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _fixtures import ON_MLP

from robustkit.attacks.fgsm import fgsm
from robustkit.attacks.pgd import margin_loss, pgd, pgd_l2


@ON_MLP
def test_pgd_at_least_as_strong_as_fgsm_on_the_mlp(mlp, data):
    x, y = data
    for eps in (0.05, 0.1):
        s_fgsm = fgsm(mlp, x, y, eps=eps).success.float().mean()
        s_pgd = pgd(mlp, x, y, eps=eps, steps=10).success.float().mean()
        assert s_pgd >= s_fgsm
    assert float(pgd(mlp, x, y, eps=0.1, steps=10).linf.max()) <= 0.1 + 1e-6


@ON_MLP
def test_restarts_keep_the_per_sample_worst_case(mlp, data):
    x, y = data
    one = pgd(mlp, x, y, eps=0.03, steps=3, restarts=1, seed=5)
    three = pgd(mlp, x, y, eps=0.03, steps=3, restarts=3, seed=5)
    # the first restart of both runs is the same draw: a success is never lost
    assert (three.success >= one.success).all()
    with torch.no_grad():
        l1 = F.cross_entropy(mlp(one.x_adv), y, reduction="none")
        l3 = F.cross_entropy(mlp(three.x_adv), y, reduction="none")
    failed = ~three.success
    assert (l3[failed] >= l1[failed] - 1e-5).all()
    assert int(three.iterations[0]) == 9


def test_margin_loss_values_and_margin_pgd():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, -1.0]])
    y = torch.tensor([0, 0])
    assert torch.allclose(margin_loss(logits, y), torch.tensor([-1.0, 5.0]))
    target = torch.tensor([2, 2])
    assert torch.allclose(margin_loss(logits, y, target), torch.tensor([-1.0, -6.0]))


@ON_MLP
def test_margin_and_targeted_pgd_reach_their_goal(mlp, data):
    x, y = data
    res = pgd(mlp, x, y, eps=0.3, steps=10, loss="margin")
    assert res.success.float().mean() > 0.9
    target = (y + 1) % 10
    tgt = pgd(mlp, x, y, eps=0.3, steps=20, target=target)
    assert torch.equal(tgt.success, tgt.pred == target)
    assert tgt.success.float().mean() > 0.8


@ON_MLP
def test_l2_pgd_stays_in_the_ball_and_matches_pgd_l2(mlp, data):
    x, y = data
    a = pgd(mlp, x, y, eps=0.8, norm="l2", steps=5, seed=3)
    b = pgd_l2(mlp, x, y, eps=0.8, steps=5, seed=3)
    assert torch.equal(a.x_adv, b.x_adv)
    assert float(a.l2.max()) <= 0.8 + 1e-5
    assert float(a.x_adv.min()) >= 0 and float(a.x_adv.max()) <= 1


@pytest.mark.parametrize("kw, match", [
    ({"steps": 0}, "steps"), ({"restarts": 0}, "restarts"), ({"loss": "dlr"}, "loss"),
    ({"norm": "l1"}, "norm"), ({"step_size": -1.0}, "step_size"),
])
def test_bad_hyperparameters_name_the_parameter(kw, match):
    model = torch.nn.Linear(4, 3)
    x, y = torch.rand(2, 4), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match=match):
        pgd(model, x, y, eps=0.1, **kw)
    with pytest.raises(ValueError, match="pgd_l2"):
        pgd_l2(model, x, y, eps=0.1, norm="linf")
