"""Issue 12 (defect 11): with --json, errors are one JSON document on stdout too
({"error": ..., "kind": "usage" | "runtime"}), and the exit codes stay 2 / 1."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from robustkit.cli import main


def _cli(*args):
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("args, needle", [
    (["train", "--model", "mlp", "--param", "epochs=-1"], "epochs=-1"),
    (["train", "--model", "nope"], "nope"),
    (["attack", "--model", "mlp", "--attack", "fgsm", "--eps", "nan"], "finite"),
    (["attack", "--model", "mlp", "--attack", "nope", "--eps", "0.1"], "unknown attack"),
    (["defend", "--model", "mlp", "--defense", "pgd", "--eps", "0.1", "--param", "steps=-3"],
     "steps=-3"),
])
def test_usage_errors_are_json_on_stdout_with_exit_2(tmp_path, args, needle):
    res = _cli(*args, "--workdir", str(tmp_path), "--json")
    assert res.exit_code == 2
    doc = json.loads(res.stdout)
    assert doc["kind"] == "usage" and needle in doc["error"]
    assert needle in res.stderr  # the plain message stays on stderr


@pytest.mark.parametrize("args, needle", [
    (["models", "show", "nope"], "no model 'nope'"),
    (["attack", "--model", "mlp", "--attack", "fgsm", "--eps", "0.1", "--dataset", "mnist",
      "--data-root", "{tmp}/no-data"], "mnist"),
])
def test_runtime_errors_are_json_on_stdout_with_exit_1(tmp_path, args, needle):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    res = _cli(*args, "--workdir", str(tmp_path), "--json")
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert doc == {"error": doc["error"], "kind": "runtime"} and needle in doc["error"]
    assert res.stderr.strip().splitlines()[-1].startswith("error:")


def test_without_json_errors_stay_off_stdout(tmp_path):
    res = _cli("models", "show", "nope", "--workdir", str(tmp_path))
    assert res.exit_code == 1 and res.stdout == ""


def test_an_invalid_sweep_spec_is_json_with_every_problem(tmp_path):
    spec = tmp_path / "bad.toml"
    spec.write_text('[[datasets]]\nname = "digits"\n[[models]]\nfamily = "mlp"\n'
                    'params = { epochs = -1 }\n[[attacks]]\nattack = "pgd"\n'
                    'params = { steps = -3 }\n')
    res = _cli("sweep", str(spec), "--json", "--out", str(tmp_path / "out"))
    assert res.exit_code == 2
    doc = json.loads(res.stdout)
    assert doc["kind"] == "usage" and len(doc["problems"]) == 2
    assert "epochs=-1" in doc["problems"][0] and "steps=-3" in doc["problems"][1]
    assert not (tmp_path / "out").exists()
