"""CLI edges of issue 11: --device auto everywhere, `sweep --dry-run` before the data
exists and with finished cells, one demo, one error format, fgsm_rs's collapse default."""
from __future__ import annotations

import csv
import json

import click
import pytest
from _specs import FGSM, spec_text
from click.testing import CliRunner

import robustkit.cli.sweep as sweep_cli
from robustkit.cli import main
from robustkit.defenses import get as get_defense

MNIST_SPEC = spec_text(sweep={"name": "mn", "eps": [0.0, 0.1]},
                       datasets=[{"name": "mnist", "test_limit": 20}],
                       models=[{"family": "linear"}], attacks=[FGSM])


def _commands(group: click.Group, prefix: str = ""):
    for name, cmd in group.commands.items():
        yield f"{prefix}{name}", cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, f"{prefix}{name} ")


def test_every_device_option_defaults_to_auto():
    found = {name: p.default for name, cmd in _commands(main) for p in cmd.params
             if p.name == "device"}
    assert {"train", "attack", "defend", "score", "sweep", "demo"} <= set(found)
    assert set(found.values()) == {"auto"}, found


def test_dry_run_lists_a_grid_before_its_data_exists(tmp_path, monkeypatch):
    monkeypatch.delenv("ROBUSTKIT_DATA", raising=False)
    spec = tmp_path / "mn.toml"
    spec.write_text(MNIST_SPEC)
    res = CliRunner().invoke(main, ["sweep", str(spec), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "1 cells, 2 rows, 1 models; 0 finished, 1 remaining" in res.stdout
    assert "note: " in res.stderr and "'mnist' needs a data root" in res.stderr
    doc = json.loads(CliRunner().invoke(main, ["sweep", str(spec), "--dry-run",
                                               "--json"]).stdout)
    assert doc["remaining_cells"] == 1 and "needs a data root" in doc["data_problems"][0]
    run = CliRunner().invoke(main, ["sweep", str(spec)])  # the real run still refuses
    assert run.exit_code == 2 and "needs a data root" in run.stderr


def test_dry_run_shows_finished_and_remaining_cells(tmp_path):
    spec = tmp_path / "tiny.toml"
    spec.write_text(MNIST_SPEC.replace('"mnist"', '"digits"').replace(
        '[[attacks]]\nattack = "fgsm"', '[[attacks]]\nattack = "fgsm"\n\n[[attacks]]\n'
        'attack = "noise"'))
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["sweep", str(spec), "--out", str(out), "--dry-run",
                                    "--json"])
    cells = json.loads(res.stdout)["cells_list"]
    assert [c["finished"] for c in cells] == [False, False]
    # One cell finished, one half done: as a killed sweep leaves results.csv.
    res = CliRunner().invoke(main, ["sweep", str(spec), "--out", str(out), "--workers", "0",
                                    "--no-report"])
    assert res.exit_code == 0, res.output
    lines = (out / "results.csv").read_text().splitlines(keepends=True)
    rows = list(csv.DictReader(lines))
    keep = [lines[0]] + [line for line, r in zip(lines[1:], rows)
                         if not (r["attack"] == "noise" and r["eps"] == "0.1")]
    assert len(keep) == 4
    (out / "results.csv").write_text("".join(keep))
    res = CliRunner().invoke(main, ["sweep", str(spec), "--out", str(out), "--dry-run"])
    assert "2 cells, 4 rows, 1 models; 1 finished, 1 remaining" in res.stdout
    lines = res.stdout.splitlines()
    assert any("fgsm" in line and line.endswith("[done]") for line in lines)
    assert any("noise" in line and line.endswith("[1/2 eps done]") for line in lines)


def test_demo_is_the_demo_sweep(monkeypatch):
    seen = {}

    def fake_run_sweep(specs, out, **kw):
        seen["specs"] = [s.path for s in specs]
        seen["out"] = str(out)
        raise RuntimeError("stop here")

    monkeypatch.setattr("robustkit.sweep.run_sweep", fake_run_sweep)
    res = CliRunner().invoke(main, ["demo", "--workers", "0"])
    assert res.exit_code == 1 and res.stderr == "error: stop here\n"
    assert [p.replace("\\", "/").split("/")[-2:] for p in seen["specs"]] == [
        ["attacks", "digits.toml"], ["defenses", "digits.toml"]]
    assert seen["out"] == "reports/demo"
    dry = CliRunner().invoke(main, ["demo", "--dry-run", "--json"])
    assert dry.exit_code == 0 and json.loads(dry.stdout)["out"] == "reports/demo"


def test_demo_without_its_specs_says_so(monkeypatch):
    monkeypatch.setattr(sweep_cli, "DEMO_SPECS", ("attacks/nope.toml",))
    res = CliRunner().invoke(main, ["demo", "--dry-run"])
    assert res.exit_code == 1
    assert res.stderr.startswith("error: the demo specs are not there") and \
        "robustkit sweep" in res.stderr


def test_runtime_and_usage_errors_have_one_format(tmp_path):
    runtime = CliRunner().invoke(main, ["models", "show", "nope", "--workdir", str(tmp_path)])
    assert runtime.exit_code == 1 and runtime.stdout == ""
    assert runtime.stderr.startswith("error: no model 'nope'")
    assert len(runtime.stderr.splitlines()) == 1
    usage = CliRunner().invoke(main, ["attack", "--model", "linear"])
    assert usage.exit_code == 2 and usage.stderr.startswith("Usage: ")
    assert "Error: Missing option" in usage.stderr
    spec = tmp_path / "bad.toml"
    spec.write_text("[sweep]\nname = 3\n")
    bad = CliRunner().invoke(main, ["sweep", str(spec)])
    assert bad.exit_code == 2 and bad.stderr.startswith("Usage: ")
    assert "Error: " in bad.stderr and "sweep.name: expected str" in bad.stderr


def test_fgsm_rs_flags_a_collapse_by_default():
    spec = get_defense("fgsm_rs")
    assert spec.defaults["collapse_ratio"] == 0.5
    import torch

    from robustkit.defenses import defend

    x, y = torch.rand(60, 1, 8, 8), torch.randint(0, 3, (60,))
    kw = {"model_params": {"epochs": 1}, "watch_size": 0}
    assert defend("fgsm_rs", "linear", x, y, eps=0.1, **kw).params["collapse_ratio"] == 0.5
    for off in (None, 0):
        params = defend("fgsm_rs", "linear", x, y, eps=0.1, collapse_ratio=off, **kw).params
        assert "collapse_ratio" not in params
    with pytest.raises(ValueError, match="collapse_ratio"):
        defend("fgsm_rs", "linear", x, y, eps=0.1, collapse_ratio=1.0, **kw)
