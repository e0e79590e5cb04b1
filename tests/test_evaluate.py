"""Evaluation rows: columns, consistent rates, the three attack kinds, batching, validation."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from torch import nn

from robustkit.attacks.base import AttackSpec, make_result
from robustkit.attacks.fgsm import fgsm
from robustkit.evaluate import COLUMNS, evaluate, evaluate_frame

ON_MLP = pytest.mark.parametrize("family", ["mlp"])  # conftest's cached `model` fixture


def _toy(k: int = 10) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, k))


@pytest.fixture(scope="module")
def data(digits_test):
    return digits_test.x[:120], digits_test.y[:120]


@ON_MLP
def test_columns_and_rates_match_the_attack_result(model, data):
    x, y = data
    rows = evaluate(model, "fgsm", x, y, eps=[0.0, 0.1], batch_size=50)
    assert [list(r) for r in rows] == [list(COLUMNS)] * 2
    zero, row = rows
    assert zero["robust_accuracy"] == zero["clean_accuracy"]
    assert zero["fooling_rate"] == zero["success_rate"] == zero["l2_mean"] == 0
    res = fgsm(model, x, y, eps=0.1)
    with torch.no_grad():
        clean = model(x).argmax(1)
    correct = clean == y
    assert row["attack"] == "fgsm" and row["eps"] == 0.1 and row["n"] == 120
    assert row["clean_accuracy"] == pytest.approx(float(correct.float().mean()))
    assert row["robust_accuracy"] == pytest.approx(float((res.pred == y).float().mean()))
    assert row["misclassification_rate"] == pytest.approx(1 - row["robust_accuracy"])
    assert row["fooling_rate"] == pytest.approx(float((res.pred != clean).float().mean()))
    assert row["success_rate"] == pytest.approx(float(res.success[correct].float().mean()))
    assert row["l2_median"] == pytest.approx(float(res.l2.median()), rel=1e-2)
    assert row["linf_mean"] == pytest.approx(0.1, abs=1e-6)
    assert row["samples_per_second"] == pytest.approx(120 / row["seconds"])
    assert row["device"] == "cpu"
    frame = evaluate_frame(model, "fgsm", x, y, eps=[0.1], batch_size=7)
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == list(COLUMNS)
    assert frame.loc[0, "robust_accuracy"] == pytest.approx(row["robust_accuracy"])


def _fake_minimal(model, x, y, *, seed=0, **_):
    """Sample i moves by i / 40 in L2 along the first pixel, and is 'fooled' (pred -1)."""
    delta = torch.zeros_like(x)
    delta.view(len(x), -1)[:, 0] = torch.arange(len(x), dtype=x.dtype) / 40
    return make_result(model, x, x + delta, y, pred=torch.full_like(y, -1),
                       info={"norm": "l2"})


def test_minimal_attacks_keep_x_adv_only_within_the_budget():
    model = _toy()
    x = torch.full((40, 1, 8, 8), 0.0)
    y = model(x).argmax(1).detach()
    spec = AttackSpec("fake_min", _fake_minimal, "l2", "minimal")
    rows = evaluate(model, spec, x, y, eps=[0.0, 0.5, 2.0], batch_size=40)
    norms = torch.arange(40) / 40
    for row in rows:
        keep = norms <= row["eps"]
        assert row["robust_accuracy"] == pytest.approx(1 - float(keep.float().mean()))
        assert row["l2_mean"] == pytest.approx(float((norms * keep).mean()), abs=1e-6)


def test_universal_attacks_fit_v_on_fit_data_and_apply_it(data):
    model = _toy()
    x, y = data
    seen = []

    def fake_uap(model, x, y, *, eps, seed=0):
        seen.append(len(x))
        v = torch.full((1, 8, 8), eps)
        return make_result(model, x, (x + v).clamp(0, 1), y, info={"v": v})

    spec = AttackSpec("fake_uap", fake_uap, "linf", "universal")
    got = {}
    rows = evaluate(model, spec, x, y, eps=[0.0, 0.2], fit_x=x[:30], fit_y=y[:30],
                    on_result=lambda e, r: got.setdefault(e, r.info["v"]))
    assert seen == [30, 30] and sorted(got) == [0.0, 0.2]
    x_adv = (x + 0.2).clamp(0, 1)
    assert rows[1]["linf_mean"] == pytest.approx(float((x_adv - x).flatten(1).amax(1).mean()))
    with torch.no_grad():
        pred = model(x_adv).argmax(1)
    assert rows[1]["robust_accuracy"] == pytest.approx(float((pred == y).float().mean()))
    assert rows[0]["fooling_rate"] == 0


def test_batches_halve_on_cuda_out_of_memory(data):
    model = _toy()
    x, y = data
    sizes = []

    def hungry(model, x, y, *, eps, seed=0):
        sizes.append(len(x))
        if len(x) > 16:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return fgsm(model, x, y, eps=eps)

    (row,) = evaluate(model, AttackSpec("hungry", hungry, "linf"), x, y, eps=0.1,
                      batch_size=64)
    (ref,) = evaluate(model, "fgsm", x, y, eps=0.1)
    assert sizes[:4] == [64, 32, 16, 16] and max(sizes[2:]) <= 16
    assert row["robust_accuracy"] == ref["robust_accuracy"]


class _BadShape(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :10].sum(1)


@pytest.mark.parametrize("case, match", [
    ("negative eps", "eps"), ("nan eps", "eps"), ("nan x", "x contains NaN"),
    ("x above 1", r"x must lie in \[0, 1\]"), ("length", r"len\(x\)=5 != len\(y\)=4"),
    ("label", "y must hold labels in \\[0, 10\\)"), ("output", "model must return logits"),
    ("batch", "batch_size"), ("fit", "fit_x and fit_y"),
])
def test_bad_input_raises_value_error_naming_the_parameter(case, match):
    x, y = torch.rand(5, 1, 8, 8), torch.zeros(5, dtype=torch.long)
    model, kw = _toy(), {"eps": [0.1]}
    if case == "negative eps":
        kw["eps"] = [0.1, -0.1]
    elif case == "nan eps":
        kw["eps"] = math.nan
    elif case == "nan x":
        x[0, 0, 0, 0] = math.nan
    elif case == "x above 1":
        x = x + 1
    elif case == "length":
        y = y[:4]
    elif case == "label":
        y[2] = 10
    elif case == "output":
        model = _BadShape()
    elif case == "batch":
        kw["batch_size"] = 0
    else:
        kw["fit_x"] = x
    with pytest.raises(ValueError, match=match):
        evaluate(model, "fgsm", x, y, **kw)


def test_unknown_attack_lists_the_valid_names():
    with pytest.raises(ValueError, match="fgsm"):
        evaluate(_toy(), "nope", torch.rand(2, 1, 8, 8), torch.zeros(2, dtype=torch.long),
                 eps=0.1)


def test_rows_name_the_autoattack_version_that_produced_them(data):
    from robustkit.evaluate import evaluate_stream

    x, y = data[0][:12], data[1][:12]
    model = nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), 10)).eval()
    quick = {"steps": 2, "targets": 2, "queries": 5}
    (std,) = evaluate(model, "autoattack", x, y, eps=0.05, **quick)
    lean = evaluate(model, "autoattack", x, y, eps=[0.05, 0.1], version="lean", **quick)
    streamed = evaluate_stream(model, "autoattack", [(x, y)], eps=0.05, version="fast",
                               **quick)
    assert std["version"] == "standard"  # the default, named
    assert [r["version"] for r in lean] == ["lean", "lean"]
    assert streamed[0]["version"] == "fast"
    (plain,) = evaluate(model, "fgsm", x, y, eps=0.05)
    assert "version" not in plain and list(plain) == list(COLUMNS)
