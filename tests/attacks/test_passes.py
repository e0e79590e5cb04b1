"""The pass counter: exact counts on attacks whose passes are known, every registered attack
carrying them in ``info``, and the model left without hooks."""
from __future__ import annotations

import pytest
import torch
from _fixtures import ON_MLP

from robustkit import attacks
from robustkit.attacks.apgd import apgd
from robustkit.attacks.fgsm import fgsm
from robustkit.attacks.passes import counting
from robustkit.attacks.targets import linearized_distance

DIGITS_N = 40


@ON_MLP
def test_fgsm_is_one_gradient_pass_and_one_prediction(mlp, data):
    x, y = data
    res = fgsm(mlp, x, y, eps=0.1)  # a robustkit model: the input checks make no pass
    assert res.info["forward_images"] == 2 * len(x)
    assert res.info["backward_images"] == len(x)
    assert (res.info["forward_passes"], res.info["backward_passes"]) == (2.0, 1.0)
    quiet = fgsm(mlp, x, y, eps=0.1, predict=False)
    assert (quiet.info["forward_passes"], quiet.info["backward_passes"]) == (1.0, 1.0)


@ON_MLP
def test_apgd_counts_match_its_own_row_count(mlp, data):
    x, y = data
    res = apgd(mlp, x, y, eps=0.05, steps=10)
    # info["evaluations"]: the clean forward plus every row of every step; the last step
    # of a row takes no gradient, and make_result predicts once more on x_adv
    assert res.info["forward_images"] == res.info["evaluations"] + len(x)
    assert 0 < res.info["backward_images"] < res.info["forward_images"]
    assert res.info["backward_images"] <= 10 * len(x)


@ON_MLP
def test_a_batched_backward_counts_every_gradient_row(mlp, data):
    x, y = data
    with counting(mlp) as c:
        linearized_distance(mlp, x, y, "linf")
    assert (c.forward_images, c.backward_images) == (len(x), 9 * len(x))


@ON_MLP
def test_nested_counts_and_no_hook_left(mlp, data):
    x, _ = data
    with counting(mlp) as outer:
        with counting(mlp) as inner:
            mlp(x)
        mlp(x[:3])
    assert (outer.forward_images, inner.forward_images) == (len(x) + 3, len(x))
    assert not mlp._forward_pre_hooks
    mlp(x)  # counted by nobody
    assert outer.forward_images == len(x) + 3


@ON_MLP
@pytest.mark.parametrize("name", ["fgsm", "pgd", "square", "deepfool", "noise"])
def test_registered_attacks_carry_the_counts(mlp, data, name):
    x, y = data
    spec = attacks.get(name)
    kw = {"steps": 3} if name == "pgd" else {"queries": 20} if name == "square" else {}
    res = spec.fn(mlp, x, y, eps=0.1, **kw)
    with counting(mlp) as c:
        spec.fn(mlp, x, y, eps=0.1, **kw)
    assert res.info["forward_images"] == c.forward_images > 0
    assert res.info["backward_images"] == c.backward_images
    assert res.info["forward_passes"] == pytest.approx(c.forward_images / len(x))


def test_plain_modules_count_the_class_probe():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x, y = torch.rand(5, 4), torch.zeros(5, dtype=torch.long)
    res = fgsm(model, x, y, eps=0.1)  # no arch: check_inputs probes 2 rows
    assert (res.info["forward_images"], res.info["backward_images"]) == (12, 5)
