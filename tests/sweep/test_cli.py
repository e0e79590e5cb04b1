"""``robustkit sweep``: dry run listing, spec errors as usage errors, a real run."""
from __future__ import annotations

import json

from click.testing import CliRunner

from robustkit.cli import main


def test_dry_run_lists_cells_and_cost(tiny_spec, tmp_path):
    res = CliRunner().invoke(main, ["sweep", "--dry-run", str(tiny_spec())])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 5 and "digits/mlp-16/none/pgd-3/seed0  eps=0,0.1" in lines[3]
    assert "4 cells, 8 rows, 2 models; 0 finished, 4 remaining; estimated" in lines[-1]
    assert "reports/tiny" in lines[-1] and not (tmp_path / "reports").exists()
    res = CliRunner().invoke(main, ["sweep", "--dry-run", "--json", str(tiny_spec())])
    doc = json.loads(res.output)
    assert doc["cells"] == 4 and doc["seconds"] >= 0 and len(doc["cells_list"]) == 4


def test_invalid_spec_exits_2_listing_problems(tiny_spec, tmp_path):
    bad = tiny_spec('\n[[attacks]]\nattack = "fgsn"\n[[datasets]]\nname = "mnist"\n')
    res = CliRunner().invoke(main, ["sweep", str(bad), "--data-root", str(tmp_path),
                                    "--out", str(tmp_path / "out")])
    assert res.exit_code == 2
    assert "2 problems in sweep spec; nothing was run" in res.output
    assert "attacks[2].attack: unknown attack 'fgsn'; valid:" in res.output
    assert "datasets[1].name: dataset 'mnist' is missing" in res.output
    assert not (tmp_path / "out").exists()


def test_run_prints_summary_and_json(tiny_spec, tmp_path):
    out = tmp_path / "out"
    args = ["sweep", str(tiny_spec()), "--out", str(out), "--workers", "0", "--no-report"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "4 cells run (0 with errors), 0 already done, 2 models trained" in res.output
    res = CliRunner().invoke(main, args + ["--json"])
    doc = json.loads(res.output)
    assert (doc["run"], doc["skipped"], doc["executor"]) == (0, 4, "serial")
