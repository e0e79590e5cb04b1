"""Square attack: every query inside the ball and the box, queries counted, strong where the
gradient is masked, flat inputs, the p schedule and the update shapes."""
from __future__ import annotations

import pytest
import torch
from _fixtures import ON_MLP
from torch import nn

from robustkit import load_dataset, models
from robustkit.attacks.apgd import apgd
from robustkit.attacks.square import p_schedule, square, square_l2
from robustkit.attacks.square_windows import meta_pattern, pseudo_gaussian, side

DIGITS_N = 60  # the `data` fixture's size (tests/attacks/conftest.py)


class Recorder(nn.Module):
    """Passes inputs to a model and keeps a copy of every input it sees."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seen: list[torch.Tensor] = []
        # The wrapped model's arch tells the input check the class count, so the check
        # makes no probing forward pass of its own: every recorded input is Square's.
        self.arch = getattr(model, "arch", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.model(x)


class Quantized(nn.Module):
    """Logits rounded to 0.01: the same decisions, a zero input gradient everywhere."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(self.model(x) * 100) / 100


def _dist(a: torch.Tensor, b: torch.Tensor, norm: str) -> torch.Tensor:
    d = a.flatten(1)[:, None, :] - b.flatten(1)[None, :, :]
    return d.abs().amax(2) if norm == "linf" else d.norm(dim=2)


@ON_MLP
@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 0.3)])
def test_every_query_in_the_ball_and_the_box(mlp, data, norm, eps):
    x, y = data
    # the clean inputs lie more than 2 eps apart, so a query's own sample is its nearest
    apart = _dist(x, x, norm) + 10 * torch.eye(len(x))
    assert float(apart.min()) > 2 * eps
    rec = Recorder(mlp)
    res = square(rec, x, y, eps=eps, norm=norm, queries=300, seed=3)
    seen = torch.cat(rec.seen)
    assert float(seen.min()) >= 0 and float(seen.max()) <= 1
    dist = _dist(seen, x, norm).amin(dim=1)
    assert float(dist.max()) <= eps + 1e-5
    # the count is exact: every row the model saw, and no sample over budget
    assert int(res.info["queries"].sum()) == len(seen)
    assert torch.equal(res.iterations, res.info["queries"])
    assert int(res.info["queries"].max()) <= 300
    robust = ~res.success
    assert (res.info["queries"][robust] == 300).all()
    assert float(_dist(res.x_adv, x, norm).diagonal().max()) <= eps + 1e-5


@ON_MLP
def test_misclassified_samples_cost_one_query(mlp, data):
    x, y = data
    wrong = mlp(x).argmax(1) != y
    y_bad = torch.where(wrong, y, (y + 1) % 10)  # every sample now "misclassified"
    res = square(mlp, x, y_bad, eps=0.1, queries=50)
    assert (res.info["queries"] == 1).all() and torch.equal(res.x_adv, x)


@ON_MLP
def test_square_breaks_a_gradient_masked_model_apgd_cannot(mlp, data):
    x, y = data
    masked = Quantized(mlp)
    g = torch.autograd.functional.jacobian(lambda v: masked(v).sum(), x[:2])
    assert torch.count_nonzero(g) == 0
    s = square(masked, x, y, eps=0.15, queries=500).success.float().mean()
    a = apgd(masked, x, y, eps=0.15, steps=20).success.float().mean()
    plain = apgd(mlp, x, y, eps=0.15, steps=20).success.float().mean()
    assert s > a + 0.2  # measured 0.97 vs 0.17 (60 images)
    assert plain > a + 0.2  # 0.95: the model itself is not robust: the mask is what stops APGD


@pytest.mark.parametrize("norm, eps", [("linf", 0.3), ("l2", 0.4)])
def test_flat_inputs_use_a_one_dimensional_window(norm, eps):
    tr, te = load_dataset("moons", "train", seed=0), load_dataset("moons", "test", seed=0)
    model = models.create("mlp", hidden=(32,), epochs=30).fit(tr.x, tr.y, n_classes=2, seed=0)
    x, y = te.x[:80], te.y[:80]
    rec = Recorder(model)
    res = square(rec, x, y, eps=eps, norm=norm, queries=200)
    assert all(s.shape[1:] == x.shape[1:] for s in rec.seen)
    seen = torch.cat(rec.seen)
    assert float(seen.min()) >= 0 and float(seen.max()) <= 1
    assert float(_dist(res.x_adv, x, norm).diagonal().max()) <= eps + 1e-5
    assert res.success.float().mean() > 0.2


def test_p_schedule_halves_at_the_papers_iterations():
    assert p_schedule(0.8, 0, 10000) == 0.8 and p_schedule(0.8, 10, 10000) == 0.8
    assert p_schedule(0.8, 11, 10000) == 0.4 and p_schedule(0.8, 51, 10000) == 0.2
    assert p_schedule(0.8, 9999, 10000) == 0.8 / 512
    # rescaled: iteration 2 of 1000 is iteration 20 of 10,000
    assert p_schedule(0.8, 2, 1000) == 0.4 and p_schedule(0.8, 5000, 5000) == 0.8 / 512


def test_update_shapes():
    pg = pseudo_gaussian(5, 5, "cpu", torch.float64)
    assert torch.isclose(pg.norm(), torch.tensor(1.0, dtype=torch.float64))
    assert pg[2, 2] == pg.max() and pg[0, 0] == pg.min() and torch.equal(pg, pg.T)
    # rings: center 1 + 1/4 + 1/9, middle ring 1/4 + 1/9, outer ring 1/9
    assert torch.allclose(pg[2, :3] / pg[0, 0], torch.tensor([1.0, 13 / 4, 49 / 4],
                                                             dtype=torch.float64))
    meta = meta_pattern(4, 4, "cpu", torch.float64)
    assert torch.isclose(meta.sum(), torch.tensor(0.0, dtype=torch.float64), atol=1e-12)
    assert (meta[:, :2] > 0).all() and (meta[:, 2:] < 0).all()


def test_l2_alias_and_bad_parameters():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x, y = torch.rand(3, 4), torch.zeros(3, dtype=torch.long)
    assert torch.equal(square_l2(model, x, y, eps=0.5, queries=10).x_adv,
                       square(model, x, y, eps=0.5, norm="l2", queries=10).x_adv)
    for kw, match in (({"queries": 0}, "queries"), ({"p_init": 0.0}, "p_init"),
                      ({"norm": "l1"}, "norm")):
        with pytest.raises(ValueError, match=match):
            square(model, x, y, eps=0.1, **kw)
    with pytest.raises(ValueError, match="shape"):
        square(model, torch.rand(2, 1, 1, 2, 2), torch.zeros(2, dtype=torch.long), eps=0.1)


def test_flat_windows_cover_sqrt_p_d_features_as_the_original():
    # the original Square windows a (1, 1, D) input with round(sqrt(p * D)) features; images
    # keep s x s = p * H * W pixels
    assert side(0.8, 1, 30) == (1, 5) and side(0.2, 1, 30) == (1, 2)
    assert side(0.8 / 512, 1, 30) == (1, 1) and side(0.8, 1, 400) == (1, 18)
    assert side(0.8, 1, 30, at_least=3) == (1, 5) and side(0.01, 1, 30, at_least=3) == (1, 3)
    assert side(0.8, 28, 28) == (25, 25) and side(0.8, 8, 8) == (7, 7)
