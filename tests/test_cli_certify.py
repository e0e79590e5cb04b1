"""``robustkit certify`` through click's CliRunner, on a model stored in a temporary workdir."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from _certify_doubles import doubles_fixture  # noqa: F401
from _fixtures import save_linear
from click.testing import CliRunner

from robustkit.cli import main
from robustkit.cli.certify import COLUMNS


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return save_linear(tmp_path_factory.mktemp("runs"))


def _run(workdir, *args: str):
    return CliRunner().invoke(main, ["certify", "--model", "lin", "--workdir", str(workdir),
                                     "--device", "cpu", "--limit", "40", *args])


def test_json_rows_and_csv(workdir, tmp_path, doubles):
    out = tmp_path / "cert.csv"
    res = _run(workdir, "--eps", "0", "--eps", "0.05", "--method", "clean0", "--attack", "pgd",
               "--attack-param", "steps=3", "--out", str(out), "--json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [r["eps"] for r in rows] == [0.0, 0.05] and rows[0]["n"] == 40
    assert all(list(r) == list(COLUMNS) for r in rows)
    at0, at5 = rows
    # eps 0 is decided exactly: the bracket closes on clean accuracy
    assert at0["exact_share"] == 1.0 and at0["certified_accuracy"] == at0["upper"]
    assert at5["certified_accuracy"] == 0.0 <= at5["upper"] <= at5["attacked_accuracy"]
    assert at5["unknown"] + at5["broken_by_certificate"] + at5["broken_by_attack"] == 40
    frame = pd.read_csv(out)
    assert list(frame.columns) == list(COLUMNS)
    assert frame["upper"].tolist() == pytest.approx([r["upper"] for r in rows])


def test_table_output_names_method_bracket_and_exact_share(workdir, doubles):
    res = _run(workdir, "--eps", "0", "--eps", "0.1", "--method", "clean0", "--attack", "none")
    assert res.exit_code == 0, res.output
    assert "certify lin (linear, stored in" in res.output and "attack none" in res.output
    for word in ("certified", "attacked", "bracket", "exact", "clean0", "100.0%"):
        assert word in res.output
    assert "unknown: clean0 decides eps 0 only" in res.output


def test_the_linear_certificate_closes_the_bracket_on_a_stored_linear_model(workdir):
    res = _run(workdir, "--eps", "0.05", "--eps", "0.1", "--norm", "l2", "--attack", "pgd",
               "--attack-param", "steps=10", "--json")
    assert res.exit_code == 0, res.output
    for r in json.loads(res.stdout):
        assert r["method"] == "linear"  # auto: the exact certificate of affine models
        assert r["exact_share"] == 1.0 and r["unknown"] == 0
        assert r["certified_accuracy"] == r["upper"] <= r["attacked_accuracy"]


def test_smoothing_says_it_certifies_another_classifier(workdir):
    res = _run(workdir, "--eps", "0.1", "--norm", "l2", "--method", "smoothing", "--attack",
               "none", "--param", "n0=20", "--param", "n=200")
    assert res.exit_code == 0, res.output
    assert "note: smoothing certifies the smoothed classifier" in res.output
    assert "n/a" in res.output  # no exact share, no bracket


def test_an_unsound_certificate_fails_with_exit_1_naming_samples(workdir, doubles):
    res = _run(workdir, "--eps", "0.3", "--method", "unsound", "--attack", "pgd",
               "--attack-param", "steps=5")
    assert res.exit_code == 1, res.output
    assert res.stderr.startswith("error: certificate 'unsound' certified samples [")
    assert "Traceback" not in res.output


@pytest.mark.parametrize("args, hint", [
    (("--eps", "0.1", "--method", "nope"), "--method"),
    (("--eps", "0.1", "--attack", "deepfool"), "--attack"),
    (("--eps", "0.1", "--attack", "pgd", "--attack-param", "steps=0"), "--attack"),
    (("--eps", "-1"), "--eps"),
    (("--eps", "0.1", "--norm", "l1"), "--norm"),
    (("--eps", "0.1", "--time-limit", "0"), "--time-limit"),
])
def test_usage_errors_exit_2(workdir, doubles, args, hint):
    res = _run(workdir, *args)
    assert res.exit_code == 2, res.output
    assert hint in res.output
