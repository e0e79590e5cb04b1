"""``robustkit attack`` through click's CliRunner, on a model stored in a temporary workdir."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from _fixtures import save_linear
from click.testing import CliRunner

from robustkit import attacks, store
from robustkit.attacks.base import AttackSpec, make_result
from robustkit.cli import main
from robustkit.evaluate import COLUMNS


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return save_linear(tmp_path_factory.mktemp("runs"))


def _run(*args: str):
    return CliRunner().invoke(main, ["attack", *args])


def test_json_rows_and_csv_for_a_stored_model(workdir, tmp_path):
    out = tmp_path / "res" / "fgsm.csv"
    res = _run("--model", "lin", "--workdir", str(workdir), "--attack", "fgsm", "--eps", "0",
               "--eps", "0.1", "--limit", "60", "--device", "cpu", "--out", str(out), "--json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [list(r) for r in rows] == [list(COLUMNS)] * 2
    assert rows[0]["robust_accuracy"] == rows[0]["clean_accuracy"] and rows[0]["n"] == 60
    assert rows[1]["robust_accuracy"] < rows[1]["clean_accuracy"]
    frame = pd.read_csv(out)
    assert list(frame.columns) == list(COLUMNS) and len(frame) == 2
    assert frame["robust_accuracy"].tolist() == pytest.approx([r["robust_accuracy"] for r in rows])


def test_table_output_and_attack_params(workdir):
    res = _run("--model", "lin", "--workdir", str(workdir), "--attack", "pgd", "--eps", "0.05",
               "--param", "steps=2", "--param", "loss=margin", "--limit", "40")
    assert res.exit_code == 0, res.output
    assert "pgd on lin (linear, stored in" in res.output
    assert "robust_accuracy" in res.output and "0.05" in res.output


def test_a_family_name_trains_a_default_model_and_says_so(tmp_path):
    res = _run("--model", "linear", "--workdir", str(tmp_path), "--attack", "noise", "--eps",
               "0.1", "--dataset", "moons", "--limit", "30", "--json")  # 2-D: trains fast
    assert res.exit_code == 0, res.output
    assert "training a default 'linear' on moons" in res.stderr
    (row,) = json.loads(res.stdout)
    assert row["attack"] == "noise" and row["n"] == 30


@pytest.mark.parametrize("args, message", [
    (["--model", "nope", "--attack", "fgsm", "--eps", "0.1"], "neither a stored model"),
    (["--model", "lin", "--attack", "nope", "--eps", "0.1"], "unknown attack 'nope'"),
    (["--model", "lin", "--attack", "fgsm", "--eps", "-0.1"], "--eps"),
    (["--model", "lin", "--attack", "fgsm", "--eps", "0.1", "--param", "steps"], "KEY=VALUE"),
    # parameter values are checked before any work: a usage error (issue 12)
    (["--model", "lin", "--attack", "fgsm", "--eps", "0.1", "--param", "alpha=-1"], "alpha=-1"),
])
def test_usage_errors_exit_2(workdir, args, message):
    res = _run(*args, "--workdir", str(workdir))
    assert res.exit_code == 2
    assert message in res.output


def test_runtime_errors_exit_1_with_one_line(workdir):
    res = _run("--model", "lin", "--workdir", str(workdir), "--attack", "fgsm", "--eps", "0.1",
               "--dataset", "mnist", "--data-root", str(workdir / "no-data"), "--limit", "20")
    assert res.exit_code == 1
    assert res.stderr.strip().startswith("error:") and "mnist" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def _fake_uap(model, x, y, *, eps, seed=0):
    v = torch.linspace(-eps, eps, 64).reshape(1, 8, 8)
    return make_result(model, x, (x + v).clamp(0, 1), y, info={"v": v})


def test_universal_attack_saves_v_and_a_png(workdir, tmp_path, monkeypatch):
    real_get = attacks.get
    fake = AttackSpec("fake_uap", _fake_uap, "linf", "universal")
    monkeypatch.setattr(attacks, "get", lambda n: fake if n == "fake_uap" else real_get(n))
    out = tmp_path / "uap.csv"
    res = _run("--model", "lin", "--workdir", str(workdir), "--attack", "fake_uap", "--eps",
               "0.2", "--limit", "40", "--out", str(out))
    assert res.exit_code == 0, res.output
    stem = "uap-fake_uap-lin-eps0.2"
    tensors, meta = store.load_tensors(tmp_path, stem)
    assert torch.allclose(tensors["v"], torch.linspace(-0.2, 0.2, 64).reshape(1, 8, 8))
    assert meta["eps"] == 0.2 and meta["attack"] == "fake_uap"
    png = tmp_path / f"{stem}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {png}" in res.output
