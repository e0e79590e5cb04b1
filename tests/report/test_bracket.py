"""The certified bracket in the report: shown where certificates ran, absent elsewhere."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from robustkit import report
from robustkit.report import bracket, ranking
from robustkit.report.data import load_run


def _certify(out, cert: dict[tuple[str, str, float], tuple[float, float, str]]) -> None:
    """Add certificate numbers to rows of ``out/results.csv`` (as the sweep writes them:
    JSON in the ``extra`` column): (model, attack, eps) -> (certified, exact, method)."""
    frame = pd.read_csv(out / "results.csv")
    extra = []
    for m, a, e in zip(frame["model"], frame["attack"], frame["eps"]):
        got = cert.get((m, a, float(e)))
        extra.append("" if got is None else json.dumps(
            {"certified_accuracy": got[0], "exact_share": got[1], "certify_method": got[2]}))
    frame["extra"] = extra
    frame.to_csv(out / "results.csv", index=False)


CERT = {("linear", "pgd", 0.05): (0.2, 0.9, "linear"), ("linear", "pgd", 0.1): (0.05, 0.8, "linear"),
        ("linear", "fgsm", 0.1): (0.08, 0.7, "linear"),  # the best lower bound of the cell wins
        ("mlp", "pgd", 0.1): (0.3, float("nan"), "smoothing")}  # smoothed: never a bracket


@pytest.fixture()
def certified_run(run_factory, tmp_path):
    out = run_factory(tmp_path / "run", defenses=False, artifacts=False, failures=False)
    _certify(out, CERT)
    return out


def test_bounds_per_cell(certified_run):
    ok = load_run(certified_run).ok
    r = ranking.ranking(ok)
    b = bracket.bounds(ok, r)
    assert b is not None
    assert b.lower.at["linear", 0.05] == 0.2 and b.lower.at["linear", 0.1] == 0.08
    assert b.exact.at["linear", 0.1] == 0.8
    # the headline is the lowest attacked number, lowered by the certificate's own witnesses
    assert b.upper.at["linear", 0.1] == pytest.approx(min(r.values.at["linear", 0.1], 0.08 + 0.3))
    assert b.lower.at["linear", 0.1] <= b.upper.at["linear", 0.1]
    assert pd.isna(b.lower.at["mlp", 0.1]) and pd.isna(b.lower.at["cnn", 0.05])
    notes = bracket.cell_notes(b)
    assert notes.at["linear", 0.05].startswith("[20.0, ") and "exact 90%" in notes.at["linear", 0.05]
    assert notes.at["mlp", 0.1] == ""


def test_report_renders_the_bracket_and_the_curve(certified_run):
    page = report.build(certified_run).read_text()
    assert "bracket [certified, attacked]" in page
    assert ">[20.0, " in page and "exact 90%" in page
    assert 'id="certified"' in page and "Certificates: linear: linear." in page
    assert "mlp: smoothing" not in page.split('id="certified"')[1].split("</section>")[0]


def test_without_certificates_the_report_shows_no_bracket(run_factory, tmp_path):
    out = run_factory(tmp_path / "plain", defenses=False, artifacts=False, failures=False)
    ok = load_run(out).ok
    assert bracket.bounds(ok, ranking.ranking(ok)) is None
    page = report.build(out).read_text()
    assert "bracket [certified, attacked]" not in page and "exact " not in page
    assert 'id="certified"' not in page


def test_only_smoothed_rows_give_no_bracket(run_factory, tmp_path):
    out = run_factory(tmp_path / "smooth", defenses=False, artifacts=False, failures=False)
    _certify(out, {("mlp", "pgd", 0.1): (0.3, float("nan"), "smoothing")})
    ok = load_run(out).ok
    assert bracket.bounds(ok, ranking.ranking(ok)) is None


def test_a_lower_bound_above_the_attacked_one_is_flagged(run_factory, tmp_path):
    out = run_factory(tmp_path / "bad", defenses=False, artifacts=False, failures=False)
    _certify(out, {("linear", "pgd", 0.3): (0.9, 1.0, "linear")})  # impossible: a bug
    ok = load_run(out).ok
    notes = bracket.cell_notes(bracket.bounds(ok, ranking.ranking(ok)))
    assert "contradiction" in notes.at["linear", 0.3]


def test_a_cell_needs_certificates_of_every_seed(run_factory, tmp_path):
    out = run_factory(tmp_path / "seeds", defenses=False, artifacts=False, failures=False)
    frame = pd.read_csv(out / "results.csv")
    frame = pd.concat([frame, frame.assign(seed=1)], ignore_index=True)
    frame.to_csv(out / "results.csv", index=False)
    _certify(out, {("linear", "pgd", 0.05): (0.2, 0.9, "linear")})  # both seeds
    frame = pd.read_csv(out / "results.csv")
    frame.loc[(frame["seed"] == 1) & (frame["eps"] == 0.05), "extra"] = ""  # seed 1 lost it
    frame.loc[(frame["model"] == "linear") & (frame["attack"] == "pgd") & (frame["eps"] == 0.1),
              "extra"] = json.dumps({"certified_accuracy": 0.05, "exact_share": 0.8,
                                     "certify_method": "linear"})
    frame.to_csv(out / "results.csv", index=False)
    ok = load_run(out).ok
    b = bracket.bounds(ok, ranking.ranking(ok))
    assert pd.isna(b.lower.at["linear", 0.05]) and b.lower.at["linear", 0.1] == 0.05


def test_rounding_of_equal_bounds_is_no_contradiction(run_factory, tmp_path):
    out = run_factory(tmp_path / "eq", defenses=False, artifacts=False, failures=False)
    frame = pd.read_csv(out / "results.csv")
    cell = (frame["model"] == "linear") & (frame["eps"] == 0.1)
    frame.loc[cell, "robust_accuracy"] = 0.19  # exact: 0.19 + 1 - 1.0 is 0.18999999999999995
    frame.to_csv(out / "results.csv", index=False)
    _certify(out, {("linear", "pgd", 0.1): (0.19, 1.0, "linear")})
    ok = load_run(out).ok
    b = bracket.bounds(ok, ranking.ranking(ok))
    assert b.upper.at["linear", 0.1] == 0.19
    assert bracket.cell_notes(b).at["linear", 0.1].startswith("[19.0, 19.0]<br>")
    assert "contradiction" not in bracket.cell_notes(b).at["linear", 0.1]
