"""Issue 21, defect 2: a sweep whose stored model cannot be loaded, or whose cells fail,
no longer exits 0."""
from __future__ import annotations

import sys

from _specs import FGSM, spec_text
from click.testing import CliRunner

from robustkit.cli import main
from robustkit.sweep import read_rows

STORED = spec_text(sweep={"name": "st", "eps": [0.0, 0.1]},
                   datasets=[{"name": "digits", "test_limit": 20}],
                   models=[{"stored": "mine"}], attacks=[FGSM])
FAILING = spec_text(sweep={"name": "fail", "eps": [0.0, 0.1]},
                    datasets=[{"name": "digits", "test_limit": 30, "fit_limit": 100}],
                    models=[{"family": "linear", "params": {"epochs": 1}}],
                    attacks=[FGSM, {"name": "broken", "attack": "uap_sgd",
                                    "params": {"target": 50}}])


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_stored_model_whose_builder_is_gone_is_refused_at_dry_run(tmp_path, nets, weights):
    ws = tmp_path / "ws"
    res = _run("import", "torch", f"{nets}:net", weights, "--name", "mine", "--dataset",
               "digits", "--workdir", ws)
    assert res.exit_code == 0, res.output
    sys.modules.pop(nets)
    sys.path.remove(str(tmp_path / "userpath"))  # the builder's module is not importable
    spec = tmp_path / "s.toml"
    spec.write_text(STORED)
    for extra in (["--dry-run"], ["--workers", "0", "--no-report"]):
        res = _run("sweep", spec, "--workdir", ws, "--out", tmp_path / "out", *extra)
        assert res.exit_code == 2, res.output
        assert "models[0].stored" in res.output and f"{nets}:net" in res.output
        assert "No module named" in res.output
    assert not (tmp_path / "out" / "results.csv").exists()


def test_error_cells_exit_1_after_writing_the_good_rows(tmp_path):
    spec = tmp_path / "f.toml"
    spec.write_text(FAILING)
    out = tmp_path / "out"
    res = CliRunner().invoke(
        main, ["sweep", str(spec), "--out", str(out), "--workers", "0", "--no-report"])
    assert res.exit_code == 1, res.output
    assert "1 with errors" in res.stderr and "cells run" not in res.stdout
    rows = read_rows(out / "results.csv")
    assert sum(r["status"] == "ok" for r in rows) == 2
    assert sum(r["status"] == "error" for r in rows) == 2
    res = CliRunner().invoke(
        main, ["sweep", str(spec), "--out", str(out), "--workers", "0", "--no-report",
               "--json"])
    assert res.exit_code == 1 and '"errors": 0' in res.stdout  # nothing new ran: still 1
