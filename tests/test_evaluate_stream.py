"""Streaming evaluation and universal fitting: the same numbers as the in-memory path."""
from __future__ import annotations

import math

import pytest
import torch
from _specs import spec_text
from torch.utils.data import DataLoader, TensorDataset

from robustkit.attacks.base import generator
from robustkit.attacks.universal import uap, uap_sgd
from robustkit.attacks.universal_stream import uap_sgd_stream, uap_stream
from robustkit.data import iter_batches
from robustkit.evaluate import evaluate
from robustkit.evaluate.stream import evaluate_stream

ON_MLP = pytest.mark.parametrize("family", ["mlp"])  # conftest's cached `model` fixture
TIMES = ("seconds", "samples_per_second")


def _same_rows(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert list(ra) == list(rb)
        for key in ra:
            if key in TIMES:
                continue
            same = ra[key] == rb[key] or (isinstance(ra[key], float) and math.isnan(ra[key])
                                          and math.isnan(rb[key]))
            assert same, (key, ra[key], rb[key])


@ON_MLP
@pytest.mark.parametrize("attack, params", [("fgsm", {}), ("pgd", {"steps": 5}),
                                            ("deepfool", {})], ids=["fgsm", "pgd", "deepfool"])
def test_stream_rows_equal_in_memory_rows(model, digits_test, attack, params):
    x, y = digits_test.x, digits_test.y
    eps = [0.0, 0.05, 0.2]
    want = evaluate(model, attack, x, y, eps=eps, batch_size=64, seed=3, **params)
    loader = DataLoader(TensorDataset(x, y), batch_size=64)
    got = evaluate_stream(model, attack, loader, eps=eps, seed=3, **params)
    _same_rows(want, got)
    assert got[0]["n"] == len(y)
    # a one-shot generator works too (read once)
    gen = ((x[s:s + 64], y[s:s + 64]) for s in range(0, len(y), 64))
    _same_rows(want, evaluate_stream(model, attack, gen, eps=eps, seed=3, **params))


@ON_MLP
def test_iter_batches_of_a_builtin_set_equals_load_dataset(model, digits_test):
    stream = iter_batches("digits", "test", batch_size=64)
    want = evaluate(model, "fgsm", digits_test.x, digits_test.y, eps=[0.1], batch_size=64)
    _same_rows(want, evaluate_stream(model, "fgsm", stream, eps=[0.1]))


class Replay:
    """A re-iterable that replays the in-memory fitter's seeded visiting order on the
    iterations listed in ``steps`` (1-based) and the plain order on the others (the
    passes that only count rates, where order does not matter)."""

    def __init__(self, x, y, batch_size, orders, steps):
        self.x, self.y, self.bs = x, y, batch_size
        self.orders, self.steps, self.calls = orders, steps, 0

    def __iter__(self):
        self.calls += 1
        order = (self.orders[self.steps.index(self.calls)] if self.calls in self.steps
                 else torch.arange(len(self.x)))
        return iter([(self.x[order[s:s + self.bs]], self.y[order[s:s + self.bs]])
                     for s in range(0, len(self.x), self.bs)])


def _orders(n: int, k: int, seed: int = 0) -> list[torch.Tensor]:
    gen = generator(seed, "cpu")
    return [torch.randperm(n, generator=gen) for _ in range(k)]


@ON_MLP
def test_uap_sgd_stream_reproduces_uap_sgd(model, digits_train):
    x, y = digits_train.x[:300], digits_train.y[:300]
    want = uap_sgd(model, x, y, xi=0.2, epochs=3, batch_size=64)
    # iterations: 1 first batch, then per epoch a step pass and a rate pass
    stream = Replay(x, y, 64, _orders(len(x), 3), steps=[2, 4, 6])
    got = uap_sgd_stream(model, stream, xi=0.2, epochs=3)
    assert torch.allclose(got.v, want.v, atol=1e-6)
    assert got.fooling_rate == pytest.approx(want.fooling_rate)
    assert got.misclassification_rate == pytest.approx(want.misclassification_rate)
    assert [h["fooling_rate"] for h in got.history] == pytest.approx(
        [h["fooling_rate"] for h in want.history])


@ON_MLP
def test_uap_stream_reproduces_batched_algorithm_1(model, digits_train):
    x, y = digits_train.x[:200], digits_train.y[:200]
    want = uap(model, x, y, xi=0.2, max_passes=2, batch_size=16)
    # iterations: 1 probe, 2 first batch, 3 initial rate, then per pass steps and rates
    stream = Replay(x, y, 64, _orders(len(x), 2), steps=[4, 6])  # chunks of 16 align
    got = uap_stream(model, stream, xi=0.2, max_passes=2, batch_size=16)
    assert got.passes == want.passes and float(want.v.abs().max()) > 0.1
    assert torch.allclose(got.v, want.v, atol=1e-6)
    assert [h["accepted"] for h in got.history] == [h["accepted"] for h in want.history]


@ON_MLP
def test_universal_rows_from_a_stream(model, digits_train, digits_test):
    x, y = digits_test.x, digits_test.y
    fit = DataLoader(TensorDataset(digits_train.x, digits_train.y), batch_size=128,
                     shuffle=True, generator=torch.Generator().manual_seed(0))
    kept = {}
    rows = evaluate_stream(model, "uap_sgd", DataLoader(TensorDataset(x, y), batch_size=64),
                           eps=[0.1, 0.25], fit=fit, epochs=3,
                           on_result=lambda e, r: kept.setdefault(e, r.info["v"]))
    assert set(kept) == {0.1, 0.25}
    for row in rows:
        v = kept[row["eps"]]
        assert float(v.abs().max()) <= row["eps"] + 1e-6
        with torch.no_grad():
            clean = model(x).argmax(1)
            adv = model((x + v).clamp(0, 1)).argmax(1)
        assert row["fooling_rate"] == pytest.approx(float((adv != clean).float().mean()))
        assert row["robust_accuracy"] == pytest.approx(float((adv == y).float().mean()))
    assert rows[1]["fooling_rate"] > 0.3  # a real perturbation, stronger at the larger xi
    assert rows[1]["fooling_rate"] >= rows[0]["fooling_rate"]
    # fitted on tensors instead: the same rows as evaluate's
    pair = (digits_train.x, digits_train.y)
    want = evaluate(model, "uap_sgd", x, y, eps=[0.2], fit_x=pair[0], fit_y=pair[1],
                    epochs=2, batch_size=64)
    got = evaluate_stream(model, "uap_sgd", DataLoader(TensorDataset(x, y), batch_size=64),
                          eps=[0.2], fit=pair, epochs=2)
    _same_rows(want, got)


@ON_MLP
def test_stream_validation(model, digits_test):
    x, y = digits_test.x, digits_test.y
    with pytest.raises(ValueError, match="empty"):
        evaluate_stream(model, "fgsm", [], eps=0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluate_stream(model, "fgsm", [(x * 2, y)], eps=0.1)
    with pytest.raises(TypeError, match="re-iterable"):
        uap_sgd_stream(model, iter([(x, y)]), xi=0.1)
    with pytest.raises(ValueError, match="cannot be fitted on a stream"):
        from robustkit.attacks.base import AttackSpec

        spec = AttackSpec("my_uap", lambda *a, **k: None, "linf", "universal")
        evaluate_stream(model, spec, [(x, y)], eps=0.1)


def _sweep(dataset_options: dict) -> str:
    return spec_text(
        sweep={"name": "pets", "eps": [0.0, 0.1], "gallery": 3},
        datasets=[{"name": "folder:pets,size=8", **dataset_options}],
        models=[{"name": "lin", "family": "linear", "params": {"epochs": 3}}],
        attacks=[{"name": "fgsm", "attack": "fgsm"},
                 {"name": "uap", "attack": "uap_sgd", "params": {"epochs": 1}}])


def test_a_sweep_streams_an_image_folder(tmp_path):
    from _datafiles import write_folder

    from robustkit.sweep import parse_spec, read_rows, run_sweep

    write_folder(tmp_path / "data", n=6, size=8)
    rows = {}
    for mode, options in (("memory", {}), ("stream", {"stream": True, "batch_size": 5})):
        spec = parse_spec(_sweep(options), f"{mode}.toml")
        summary = run_sweep([spec], tmp_path / mode, data_root=str(tmp_path / "data"),
                            threads=1, report=False)
        rows[mode] = read_rows(tmp_path / mode / "results.csv")
        assert summary.errors == 0, [r["error"] for r in rows[mode] if r["error"]]
        assert len(rows[mode]) == 4
        assert list((tmp_path / mode / "artifacts" / "uap").rglob("*.safetensors"))
    keys = ("clean_accuracy", "robust_accuracy", "fooling_rate", "l2_median", "linf_mean",
            "test_accuracy")
    fgsm = {m: [{k: r[k] for k in keys} for r in rs if r["attack"] == "fgsm"]
            for m, rs in rows.items()}
    assert fgsm["stream"] == fgsm["memory"]  # same model, same numbers
    assert {r["cell_id"] for r in rows["stream"]} != {r["cell_id"] for r in rows["memory"]}


def test_cli_attack_stream_prints_the_in_memory_rows(tmp_path):
    import json

    from click.testing import CliRunner

    from robustkit import models, store
    from robustkit.cli import main

    module, rec = models.train("linear", "digits", epochs=3)
    store.save(module, tmp_path / "lin", record=rec)

    def rows(*extra):
        res = CliRunner().invoke(main, ["attack", "--model", "lin", "--workdir", str(tmp_path),
                                        "--eps", "0.1", "--eps", "0.2", "--batch-size", "64",
                                        "--json", *extra])
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)

    for attack in ("pgd", "uap_sgd"):
        args = ("--attack", attack, "--param", "epochs=1" if attack == "uap_sgd" else
                "steps=3")
        streamed = rows(*args, "--stream", "--out", str(tmp_path / f"{attack}.csv"))
        if attack == "pgd":
            _same_rows(rows(*args), streamed)
        else:  # fitted on the streamed train split; v and its PNG are written
            assert len(streamed) == 2 and streamed[0]["n"] == 450
            assert len(list(tmp_path.glob(f"{attack}-uap_sgd-lin-eps*.png"))) == 2


@ON_MLP
def test_targeted_uap_sgd_stream(model, digits_train):
    loader = DataLoader(TensorDataset(digits_train.x, digits_train.y), batch_size=128)
    res = uap_sgd_stream(model, loader, xi=0.3, epochs=3, target=4)
    with torch.no_grad():
        hit = model((digits_train.x + res.v).clamp(0, 1)).argmax(1) == 4
    assert res.target_rate == pytest.approx(float(hit.float().mean()))
    assert res.target_rate > 0.3 and float(res.v.abs().max()) <= 0.3 + 1e-6
    with pytest.raises(ValueError, match="target"):
        uap_sgd_stream(model, loader, xi=0.3, epochs=1, target=10)
