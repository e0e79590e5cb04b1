"""The ``certify`` entry of sweep specs: parsing, validation, cells, and rows that carry it."""
from __future__ import annotations

import json

import pytest
from _certify_doubles import doubles_fixture  # noqa: F401

from robustkit.sweep import expand, load_spec, read_rows, run_sweep
from robustkit.sweep.spec import SpecError, parse_spec
from robustkit.sweep.validate import validate

CERTIFY = """
[certify]
method = "clean0"
time_limit = 5
attacks = ["pgd-3"]
"""


def test_spec_wide_entry_certifies_the_named_attacks_cells(tiny_spec, doubles):
    spec = load_spec(tiny_spec(CERTIFY))
    assert spec.certify == {"method": "clean0", "time_limit": 5, "attacks": ("pgd-3",)}
    validate([spec], data=False)
    cells = {c.label: c for c in expand([spec])}
    pgd = cells["digits/linear/none/pgd-3/seed0"]
    assert pgd.certify == {"method": "clean0", "time_limit": 5}
    assert cells["digits/linear/none/fgsm/seed0"].certify is None
    # cells that do not certify keep the ids they had without the entry
    plain = {c.label: c.cell_id for c in expand([load_spec(tiny_spec())])}
    assert cells["digits/linear/none/fgsm/seed0"].cell_id == plain["digits/linear/none/fgsm/seed0"]
    assert pgd.cell_id != plain["digits/linear/none/pgd-3/seed0"]


def _with_model_entry(tiny_spec, extra: str):
    """The tiny spec plus ``extra``, with mlp-16 certified by its own (unsound) entry."""
    path = tiny_spec(extra)
    path.write_text(path.read_text().replace(
        'name = "mlp-16"', 'name = "mlp-16"\ncertify = { method = "unsound" }'))
    return load_spec(path)


def test_a_models_own_entry_wins_and_models_filters(tiny_spec, doubles):
    spec = _with_model_entry(tiny_spec, CERTIFY + 'models = ["linear"]\n')
    cells = {c.label: c for c in expand([spec])}
    assert cells["digits/mlp-16/none/fgsm/seed0"].certify == {"method": "unsound"}
    assert cells["digits/linear/none/fgsm/seed0"].certify is None  # attacks filter
    assert cells["digits/linear/none/pgd-3/seed0"].certify["method"] == "clean0"


@pytest.mark.parametrize("entry, expected", [
    ('[certify]\ntime_limit = 0\n', "certify.time_limit: 0 is not valid"),
    ('[certify]\nlimit = 3\n', "certify.limit: unknown key; valid: method, time_limit"),
    ('[certify]\nattacks = "pgd"\n', "certify.attacks: must be a list of names"),
    ('[[certify]]\nmethod = "auto"\n', "certify: expected a table"),
])
def test_parsing_names_bad_values(tiny_spec, entry, expected):
    with pytest.raises(SpecError) as info:
        load_spec(tiny_spec(entry))
    assert any(expected in p for p in info.value.problems), info.value.problems


@pytest.mark.parametrize("entry, expected", [
    ('[certify]\nmethod = "nope"\n', "certify: certify.method='nope' is not valid; valid: auto"),
    ('[certify]\nattacks = ["pgd"]\n', "certify.attacks: 'pgd' is not one of this spec's attacks"),
    ('[certify]\nmodels = ["cnn"]\n', "certify.models: 'cnn' is not one of this spec's models"),
])
def test_validation_names_bad_methods_and_names(tiny_spec, entry, expected, doubles):
    with pytest.raises(SpecError) as info:
        validate([load_spec(tiny_spec(entry))], data=False)
    assert any(expected in p for p in info.value.problems), info.value.problems


def test_a_models_entry_cannot_filter_models():
    with pytest.raises(SpecError, match=r"models\[0\].certify.models: unknown key"):
        parse_spec('[[datasets]]\nname="digits"\n[[models]]\nfamily="linear"\n'
                   'certify = { models = ["x"] }\n[[attacks]]\nattack="fgsm"\n')


def test_rows_carry_the_certificate_columns_and_contradictions_fail_the_cell(
        tmp_path, tiny_spec, doubles):
    # auto picks the exact linear certificate for the linear model; mlp-16 has its own
    # (unsound) entry
    spec = _with_model_entry(tiny_spec, CERTIFY.replace('"clean0"', '"auto"')
                             + 'models = ["linear"]\n')
    run_sweep([spec], tmp_path / "out", threads=1, report=False)
    rows = read_rows(tmp_path / "out" / "results.csv")
    by = {(r["model"], r["attack"], r["eps"]): r for r in rows}
    for eps in ("0.0", "0.1"):
        row = by[("linear", "pgd-3", eps)]
        assert row["status"] == "ok"
        extra = json.loads(row["extra"])
        assert extra["certify_method"] == "linear" and extra["exact_share"] == 1.0
        assert extra["certified_accuracy"] <= float(row["robust_accuracy"])
        if eps == "0.0":
            assert extra["certified_accuracy"] == float(row["clean_accuracy"])
    assert "certify" not in (by[("linear", "fgsm", "0.1")]["extra"] or "")
    # the unsound certificate on mlp-16: every cell fails, naming the samples
    bad = [r for r in rows if r["model"] == "mlp-16"]
    assert bad and all(r["status"] == "error" for r in bad)
    assert all("'unsound' certified samples [" in r["error"] for r in bad)


def test_streamed_datasets_are_refused(tiny_spec, doubles):
    path = tiny_spec(CERTIFY)
    path.write_text(path.read_text().replace("test_limit = 60", "test_limit = 60\nstream = true"))
    with pytest.raises(SpecError, match=r"certify: datasets \['digits'\] are streamed"):
        validate([load_spec(path)], data=False)
    assert all(c.certify is None for c in expand([load_spec(path)]))
