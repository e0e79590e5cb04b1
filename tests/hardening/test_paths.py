"""A sweep spec never chooses where the sweep writes outside reports/; only --out does."""
from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from robustkit.cli import main
from robustkit.cli.sweep import default_out
from robustkit.sweep import SpecError, parse_spec

SPEC = """
[sweep]
name = {name!r}

[[datasets]]
name = "digits"
test_limit = 20

[[models]]
family = "linear"
params = {{ epochs = 1 }}

[[attacks]]
attack = "fgsm"
"""


@pytest.mark.parametrize("name", ["/tmp/elsewhere", "../../x", "..", "a/b", "a\\\\b", ".hidden",
                                  "~root", ""])
def test_sweep_name_that_leaves_reports_is_refused_at_parsing(name):
    with pytest.raises(SpecError, match=r"sweep\.name: .* is not a plain folder name"):
        parse_spec(SPEC.format(name=name), "s.toml")


@pytest.mark.parametrize("name", ["digits-attacks", "mnist_1.0", "a+b"])
def test_plain_sweep_names_parse(name):
    assert parse_spec(SPEC.format(name=name), "s.toml").name == name


def test_absolute_name_writes_nothing_there(tmp_path, monkeypatch):
    """The reported attack: an existing index.html and run.json in the folder the name
    points to stay as they were, and nothing else is written anywhere."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "index.html").write_text("mine")
    (victim / "run.json").write_text("{}")
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC.format(name=str(victim)))
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["sweep", str(spec), "--workers", "0"])
    assert res.exit_code == 2, res.output
    assert "sweep.name" in res.stderr and "Usage:" in res.stderr
    assert (victim / "index.html").read_text() == "mine"
    assert sorted(p.name for p in victim.iterdir()) == ["index.html", "run.json"]
    assert not (tmp_path / "reports").exists()


def test_default_out_from_an_odd_file_stem_is_refused(tmp_path):
    """Without [sweep].name the file stem names the folder; a stem like '..' must not."""
    body = SPEC.format(name="x").replace("[sweep]\nname = 'x'\n", "")
    spec = parse_spec(body, str(tmp_path / "...toml"))
    assert spec.name == ".."
    with pytest.raises(click.UsageError, match="--out"):
        default_out([spec])
    ok = parse_spec(body, str(tmp_path / "grid.toml"))
    assert str(default_out([ok])) == "reports/grid"


def test_report_refuses_a_folder_that_is_no_sweep_output(tmp_path):
    """`robustkit report ~` must not drop an index.html into a home directory."""
    res = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert res.exit_code == 2 and "holds no results.csv" in res.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("out", ["my results.csv", "ünï cødé.csv", "-x.csv", "../up.csv"])
def test_universal_side_files_get_a_safe_stem_from_any_out_name(out):
    """The stem is fixed up front, not refused after a long attack already ran."""
    from robustkit.cli.attack import universal_stem
    from robustkit.store import check_name

    stem = universal_stem(out, "uap", "linear-digits", 0.1)
    assert check_name(stem) == stem and stem.endswith("uap-linear-digits-eps0.1")


def test_binary_spec_is_a_spec_error_naming_the_file(tmp_path):
    spec = tmp_path / "blob.toml"
    spec.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    res = CliRunner().invoke(main, ["sweep", str(spec), "--dry-run"])
    assert res.exit_code == 2 and "blob.toml: not a TOML spec (not UTF-8 text)" in res.stderr
