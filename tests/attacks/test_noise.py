"""Noise baselines: exact norms, seeding, weaker than FGSM; patch: one block, same L2 as diffuse."""
from __future__ import annotations

import pytest
import torch
from _fixtures import ON_MLP

from robustkit.attacks.fgsm import fgm, fgsm
from robustkit.attacks.noise import noise, noise_l2, patch


def _toy() -> torch.nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))


def test_noise_moves_every_coordinate_by_eps_or_has_l2_norm_eps():
    model = _toy()
    x, y = torch.full((6, 1, 8, 8), 0.5), torch.zeros(6, dtype=torch.long)
    lin = noise(model, x, y, eps=0.1, seed=1)
    assert torch.allclose(lin.delta.abs(), torch.full_like(x, 0.1))
    assert 0.3 < float((lin.delta > 0).float().mean()) < 0.7
    l2 = noise_l2(model, x, y, eps=0.4, seed=1)
    assert torch.allclose(l2.l2, torch.full((6,), 0.4), atol=1e-6)
    assert torch.equal(l2.x_adv, noise(model, x, y, eps=0.4, norm="l2", seed=1).x_adv)


def test_noise_is_seeded_and_clipped():
    model = _toy()
    x, y = torch.rand(5, 1, 8, 8), torch.zeros(5, dtype=torch.long)
    a, b, c = (noise(model, x, y, eps=0.3, seed=s) for s in (1, 1, 2))
    assert torch.equal(a.x_adv, b.x_adv) and not torch.equal(a.x_adv, c.x_adv)
    assert float(a.x_adv.min()) >= 0 and float(a.x_adv.max()) <= 1


@ON_MLP
def test_random_noise_is_much_weaker_than_fgsm(model, digits_test):
    x, y = digits_test.x[:200], digits_test.y[:200]
    s_noise = noise(model, x, y, eps=0.1).success.float().mean()
    s_fgsm = fgsm(model, x, y, eps=0.1).success.float().mean()
    assert s_fgsm > s_noise + 0.2


def test_local_patch_touches_one_block_only():
    model = _toy()
    x, y = torch.full((8, 1, 8, 8), 0.5), torch.arange(8) % 10
    res = patch(model, x, y, eps=0.5, size=3, seed=4)
    for i in range(8):
        rows, cols = torch.nonzero(res.delta[i, 0], as_tuple=True)
        assert len(rows) <= 9
        top, left = int(res.info["top"][i]), int(res.info["left"][i])
        assert rows.min() >= top and rows.max() < top + 3
        assert cols.min() >= left and cols.max() < left + 3
    assert torch.allclose(res.l2, torch.full((8,), 0.5), atol=1e-5)
    center = patch(model, x, y, eps=0.5, size=2, location="center")
    assert (center.delta[:, 0, 3:5, 3:5] != 0).all() and center.delta[:, 0, :3].eq(0).all()


def test_diffuse_gradient_patch_is_fgm_and_flat_inputs_work():
    model = _toy()
    x, y = 0.2 + 0.6 * torch.rand(6, 1, 8, 8), torch.zeros(6, dtype=torch.long)
    diffuse = patch(model, x, y, eps=0.3, mode="diffuse")
    assert torch.allclose(diffuse.x_adv, fgm(model, x, y, eps=0.3).x_adv, atol=1e-6)
    flat = patch(torch.nn.Linear(5, 3), torch.full((4, 5), 0.5), y[:4], eps=0.2, size=2,
                 pattern="random")
    assert ((flat.delta != 0).sum(1) <= 2).all()


@ON_MLP
def test_worst_location_never_loses_to_its_first_candidate(model, digits_test):
    x, y = digits_test.x[:100], digits_test.y[:100]
    one = patch(model, x, y, eps=1.0, size=3, location="worst", k=1, seed=2)
    assert torch.equal(one.x_adv, patch(model, x, y, eps=1.0, size=3, seed=2).x_adv)
    many = patch(model, x, y, eps=1.0, size=3, location="worst", k=6, seed=2)
    ce = torch.nn.functional.cross_entropy
    with torch.no_grad():
        assert (ce(model(many.x_adv), y, reduction="none")
                >= ce(model(one.x_adv), y, reduction="none") - 1e-5).all()


@ON_MLP
def test_diffuse_perturbation_beats_local_one_of_the_same_l2_norm(model, digits_test):
    x, y = digits_test.x[:200], digits_test.y[:200]
    local = patch(model, x, y, eps=1.0, size=3, location="worst", k=4)
    diffuse = patch(model, x, y, eps=1.0, mode="diffuse")
    assert diffuse.success.float().mean() > local.success.float().mean()


@pytest.mark.parametrize("kw, match", [
    ({"size": 0}, "size"), ({"k": 0}, "k"), ({"location": "edge"}, "location"),
    ({"mode": "both"}, "mode"), ({"pattern": "sign"}, "pattern"),
])
def test_bad_patch_arguments_name_the_parameter(kw, match):
    x, y = torch.rand(2, 1, 8, 8), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match=match):
        patch(_toy(), x, y, eps=0.5, **kw)
    with pytest.raises(ValueError, match="norm"):
        noise(_toy(), x, y, eps=0.5, norm="l1")
