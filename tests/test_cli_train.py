"""``robustkit datasets | train | models`` through click's CliRunner."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from robustkit import data as datasets
from robustkit import models, store
from robustkit.cli import main

FAST = ["--model", "linear", "--param", "epochs=2"]


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_train_list_show_round_trip(tmp_path, digits_test):
    ws = tmp_path / "runs"
    res = run("train", *FAST, "--param", "loss=hinge", "--name", "lin", "--workdir", ws,
              "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert {"name", "model", "params", "dataset", "train_accuracy", "test_accuracy",
            "seconds", "path"} <= set(out)
    assert out["name"] == "lin" and out["model"] == "linear" and out["dataset"] == "digits"
    assert out["params"]["loss"] == "hinge" and out["params"]["epochs"] == 2
    assert 0.5 < out["test_accuracy"] <= 1 and out["path"] == str(ws / "lin")
    module, meta = store.load(ws / "lin")
    assert meta.metrics["test_accuracy"] == out["test_accuracy"]
    assert models.accuracy(module, digits_test.x, digits_test.y) == pytest.approx(
        out["test_accuracy"])

    text = run("train", *FAST, "--workdir", ws)  # default name MODEL-DATASET, text output
    assert text.exit_code == 0 and "linear-digits" in text.stdout and "test accuracy" in text.stdout

    listed = run("models", "list", "--workdir", ws, "--json")
    assert listed.exit_code == 0
    assert [r["name"] for r in json.loads(listed.stdout)] == ["lin", "linear-digits"]
    table = run("models", "list", "--workdir", ws)
    assert table.exit_code == 0 and table.stdout.splitlines()[0].startswith("NAME")

    shown = run("models", "show", "lin", "--workdir", ws, "--json")
    assert shown.exit_code == 0
    doc = json.loads(shown.stdout)
    assert doc["family"] == "linear" and doc["params"]["loss"] == "hinge"
    assert doc["arch"] == {"input_shape": [1, 8, 8], "n_classes": 10}
    assert "sha256" in run("models", "show", "lin", "--workdir", ws).stdout


def test_existing_name_needs_force(tmp_path):
    ws = tmp_path / "runs"
    assert run("train", *FAST, "--name", "a", "--workdir", ws).exit_code == 0
    before = (ws / "a" / "model.json").read_bytes()
    again = run("train", *FAST, "--name", "a", "--workdir", ws)
    assert again.exit_code == 1 and "--force" in again.stderr
    assert (ws / "a" / "model.json").read_bytes() == before
    forced = run("train", *FAST, "--param", "epochs=1", "--name", "a", "--workdir", ws,
                 "--force", "--json")
    assert forced.exit_code == 0 and json.loads(forced.stdout)["params"]["epochs"] == 1


@pytest.mark.parametrize("args, needle", [
    (["train", "--model", "nope"], "linear"),
    (["train", "--model", "linear", "--dataset", "imagenet"], "digits"),
    (["train", *FAST, "--param", "epochs"], "KEY=VALUE"),
    (["train", *FAST, "--param", "epochs=abc"], "expected an integer"),
    (["train", *FAST, "--param", "colour=red"], "valid: batch_size, epochs, loss"),
    (["train", *FAST, "--param", "loss=ridge"], "logistic"),
    (["train", *FAST, "--name", "../escape"], "model name"),
    (["train", *FAST, "--limit", "0"], "--limit"),
    (["train", *FAST, "--device", "tpu"], "auto"),
])
def test_usage_errors_exit_2_with_valid_choices(tmp_path, args, needle):
    res = run(*args, "--workdir", tmp_path)
    assert res.exit_code == 2, res.output
    assert needle in res.stderr
    assert not any(tmp_path.iterdir())


def test_bad_model_lists_every_family():
    res = run("train", "--model", "nope")
    assert res.exit_code == 2 and all(name in res.stderr for name in models.names())


def test_missing_dataset_files_exit_1_with_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv(datasets.DATA_ENV, raising=False)
    res = run("train", *FAST, "--dataset", "mnist", "--data-root", tmp_path / "data",
              "--workdir", tmp_path / "runs")
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "MNIST/raw" in lines[0]
    assert "Traceback" not in res.output and not (tmp_path / "runs").exists()
    debug = CliRunner().invoke(main, ["--debug", "train", *FAST, "--dataset", "mnist",
                                      "--data-root", str(tmp_path / "data")])
    assert debug.exit_code == 1 and isinstance(debug.exception, FileNotFoundError)


def test_show_unknown_and_empty_workspace(tmp_path):
    res = run("models", "show", "ghost", "--workdir", tmp_path)
    assert res.exit_code == 1 and "no model 'ghost'" in res.stderr
    empty = run("models", "list", "--workdir", tmp_path, "--json")
    assert empty.exit_code == 0 and json.loads(empty.stdout) == []
    assert "no models" in run("models", "list", "--workdir", tmp_path).stdout


def test_list_reports_a_broken_model(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.json").write_text("not json")
    res = run("models", "list", "--workdir", tmp_path, "--json")
    assert res.exit_code == 0
    (row,) = json.loads(res.stdout)
    assert row["name"] == "bad" and "not JSON" in row["error"]


def test_datasets_command(tmp_path):
    res = run("datasets", "--data-root", tmp_path, "--json")
    assert res.exit_code == 0
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert set(rows) == set(datasets.names())
    assert rows["digits"]["available"] and not rows["mnist"]["available"]
    text = run("datasets", "--data-root", tmp_path).stdout
    assert "built-in" in text and "missing" in text


@pytest.mark.parametrize("cmd", [["datasets"], ["train"], ["models"], ["models", "list"],
                                 ["models", "show"], ["demo"]])
def test_help_everywhere(cmd):
    res = run(*cmd, "--help")
    assert res.exit_code == 0 and "Usage:" in res.stdout and "--" in res.stdout


def test_progress_on_unless_quiet_and_never_on_stdout(tmp_path, monkeypatch):
    """Off a terminal, progress is status lines on stderr (robustkit.progress), not a bar
    that stays silent; --quiet turns it off; stdout holds the result line only."""
    seen = []
    real = models.train

    def spy(*args, **kwargs):
        seen.append(kwargs["progress"])
        return real(*args, **kwargs)

    monkeypatch.setattr(models, "train", spy)
    res = run("train", *FAST, "--workdir", tmp_path)
    assert res.exit_code == 0 and len(res.stdout.splitlines()) == 1
    assert run("train", *FAST, "--workdir", tmp_path, "--force", "--quiet").exit_code == 0
    assert seen == [True, False]
    assert torch.is_tensor(store.load(tmp_path / "linear-digits")[0].linear.weight)
