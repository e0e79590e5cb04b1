"""Per-sample randomness: every registered attack gives a sample the same result whatever
batch it is in (halves of a batch, a permuted batch with permuted ids), and the counter
hash behind it is splitmix64 with independent-looking numbers."""
from __future__ import annotations

import copy

import pytest
import torch
from _fixtures import ON_MLP

from robustkit import attacks
from robustkit.attacks.rng import SampleRNG, mix, sample_rng

# Quick settings, with every random part switched on (random starts, restarts, windows).
QUICK = {"fgsm": {"random_start": True}, "fgm": {"random_start": True},
         "pgd": {"steps": 3, "restarts": 2}, "pgd_l2": {"steps": 3, "restarts": 2},
         "apgd": {"steps": 4, "restarts": 2}, "apgd_l2": {"steps": 4, "restarts": 2},
         "apgd_t": {"steps": 3, "targets": 3, "restarts": 2},
         "fab": {"steps": 5, "restarts": 2, "targets": 2},
         "fab_l2": {"steps": 5, "restarts": 2, "targets": 2},
         "square": {"queries": 25}, "square_l2": {"queries": 25},
         "autoattack": {"steps": 3, "targets": 2, "queries": 15},
         "autoattack_l2": {"steps": 3, "targets": 2, "queries": 15},
         "deepfool": {"max_iter": 10}, "deepfool_linf": {"max_iter": 10},
         "patch": {"location": "worst", "k": 3, "pattern": "random"}}
EPS = {"linf": 0.15, "l2": 1.5}
PER_SAMPLE = [n for n in attacks.names() if attacks.get(n).kind != "universal"]
N = 24
# Attacks whose outcome on this data always shows their draws (FAB's restarts may not).
DRAWS = {"fgsm", "fgm", "pgd", "pgd_l2", "apgd", "apgd_l2", "apgd_t", "square", "square_l2",
         "noise", "noise_l2", "patch", "autoattack", "autoattack_l2"}
BATCHED_GRADIENTS = {"deepfool", "deepfool_linf", "fab", "fab_l2"}
SEED = 5


def _run(name, model, x, y, ids):
    spec = attacks.get(name)
    eps = {} if spec.kind == "minimal" else {"eps": EPS[spec.norm]}
    if name.startswith("fab"):
        eps = {"eps": EPS[spec.norm]}  # the scale of FAB's random restarts
    return spec.fn(model, x, y, seed=SEED, sample_ids=ids, **eps, **QUICK.get(name, {}))


@ON_MLP
@pytest.mark.parametrize("name", PER_SAMPLE)
def test_a_sample_gets_the_same_result_in_any_batch(mlp, data, name):
    x, y = data[0][:N], data[1][:N]
    if name in BATCHED_GRADIENTS:
        # float32 sums over a batch of per-sample gradients round with the batch size
        # (1e-7): compare in float64, where that rounding is far below the tolerance
        mlp, x = copy.deepcopy(mlp).double(), x.double()
    ids = torch.arange(100, 100 + N)
    whole = _run(name, mlp, x, y, ids)
    h = N // 2
    first, second = _run(name, mlp, x[:h], y[:h], ids[:h]), _run(name, mlp, x[h:], y[h:], ids[h:])
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(1))
    shuffled = _run(name, mlp, x[perm], y[perm], ids[perm])
    for got, want in ((torch.cat([first.x_adv, second.x_adv]), whole.x_adv),
                      (shuffled.x_adv, whole.x_adv[perm])):
        if name in BATCHED_GRADIENTS:
            torch.testing.assert_close(got, want, rtol=0, atol=1e-9)
        else:
            assert torch.equal(got, want)
    assert torch.equal(whole.success, torch.cat([first.success, second.success]))
    if name in DRAWS:  # other ids, other draws
        assert not torch.equal(_run(name, mlp, x, y, ids + 1000).x_adv, whole.x_adv)


def test_mix_is_splitmix64():
    mask = (1 << 64) - 1

    def reference(z: int) -> int:
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    values = [0, 1, 2 ** 63 - 1, -1, 123456789012345, -(2 ** 62)]
    got = mix(torch.tensor(values))
    assert [int(g) & mask for g in got] == [reference(v & mask) for v in values]


def test_draws_are_uniform_normal_and_fresh_per_draw():
    rng = SampleRNG(0, torch.arange(2000), "cpu")
    u, z = rng.rand((2000, 50)), rng.randn((2000, 50), dtype=torch.float64)
    assert 0 <= float(u.min()) and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.005 and abs(float(u.var()) - 1 / 12) < 0.002
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1) < 0.01
    again = rng.rand((2000, 50))  # the second draw of each sample differs from the first
    assert float((again == u).float().mean()) < 0.001
    counts = torch.bincount(rng.randint(3, 7, (2000, 10)).flatten() - 3)
    assert len(counts) == 4 and int(counts.min()) > 4500


def test_take_shares_the_counts_and_keeps_repeats_apart():
    rng = SampleRNG(3, torch.tensor([7, 8, 9]), "cpu")
    part = rng.take(torch.tensor([2, 2]), sub=torch.tensor([1, 2]))
    a = part.rand((2, 4))
    assert not torch.equal(a[0], a[1])  # one sample toward two targets: two draws
    fresh = SampleRNG(3, torch.tensor([9]), "cpu")
    fresh.rand((1, 4))  # sample 9 took one draw through ``part``
    assert torch.equal(rng.take(torch.tensor([2])).rand((1, 4)), fresh.rand((1, 4)))


def test_sample_ids_are_checked():
    x = torch.rand(3, 2)
    with pytest.raises(ValueError, match="sample_ids must be an integer tensor of shape"):
        sample_rng(0, x, torch.arange(4), "s")
    with pytest.raises(ValueError, match="first dimension must be the rows"):
        SampleRNG(0, torch.arange(3), "cpu").rand((2, 2))
