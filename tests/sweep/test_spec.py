"""Spec parsing and validation: every problem reported with file, key and valid choices."""
from __future__ import annotations

from pathlib import Path

import pytest
from _specs import FGSM, PGD3, spec_text

from robustkit.sweep import SpecError, expand, load_spec, parse_spec, validate
from robustkit.sweep.cells import model_key
from robustkit.sweep.spec import NO_DEFENSE

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "attacks").glob("*.toml")) + sorted((ROOT / "defenses").glob("*.toml"))

BASE = spec_text(
    sweep={"eps": [0.0, 0.1]},
    datasets=[{"name": "digits", "test_limit": 50}],
    models=[{"family": "linear"},
            {"name": "small-mlp", "family": "mlp", "params": {"hidden": [16], "epochs": 2}}],
    attacks=[FGSM, {**PGD3, "eps": [0.2]}])


def problems_of(text: str, **kw) -> list[str]:
    with pytest.raises(SpecError) as info:
        validate([parse_spec(text, "s.toml")], **kw)
    return info.value.problems


def test_parse_fills_defaults_and_expands_grid():
    spec = parse_spec(BASE, "s.toml")
    assert spec.name == "s" and spec.seeds == (0,)
    assert [d.defense for d in spec.defenses] == [NO_DEFENSE]
    assert spec.models[1].params["hidden"] == (16,)  # TOML arrays become tuples
    validate([spec])
    cells = expand([spec])
    assert [c.label for c in cells] == [
        "digits/linear/none/fgsm/seed0", "digits/linear/none/pgd-3/seed0",
        "digits/small-mlp/none/fgsm/seed0", "digits/small-mlp/none/pgd-3/seed0"]
    assert cells[1].eps == (0.2,) and cells[0].eps == (0.0, 0.1)
    assert len({c.cell_id for c in cells}) == 4


def test_ids_depend_on_content_not_names_or_order():
    a = expand([parse_spec(BASE, "a.toml")])
    renamed = BASE.replace('name = "small-mlp"', 'name = "tiny"').replace(
        "params = { hidden = [16], epochs = 2 }", "params = { epochs = 2, hidden = [16] }")
    b = expand([parse_spec(renamed, "b.toml")])
    assert [c.cell_id for c in a] == [c.cell_id for c in b]
    changed = expand([parse_spec(BASE.replace("epochs = 2", "epochs = 3"), "c.toml")])
    assert a[2].cell_id != changed[2].cell_id and a[0].cell_id == changed[0].cell_id
    # explicit defaults give the same model key as omitted ones
    spec = parse_spec(BASE, "a.toml")
    ds, lin = spec.datasets[0], spec.models[0]
    explicit = parse_spec(BASE.replace('family = "linear"', 'family = "linear"\nparams = '
                                       '{ loss = "logistic" }'), "d.toml").models[0]
    assert model_key(ds, lin, spec.defenses[0], 0) == model_key(ds, explicit, spec.defenses[0], 0)
    assert model_key(ds, lin, spec.defenses[0], 0) != model_key(ds, lin, spec.defenses[0], 1)


def test_shape_problems_are_all_reported_at_once():
    bad = BASE.replace("[sweep]", "colour = 1\n[sweep]\nseedz = [1]").replace(
        "eps = [0.0, 0.1]", 'eps = [0.0, -0.1, "a", 0.0]')
    with pytest.raises(SpecError) as info:
        parse_spec(bad, "s.toml")
    text = str(info.value)
    assert "s.toml: colour: unknown top-level key; valid: sweep, datasets" in text
    assert "s.toml: sweep.seedz: unknown key; valid: name, description, seeds" in text
    assert "-0.1 is not a finite number >= 0" in text and "'a' is not" in text
    assert "duplicate values" in text and "nothing was run" in text
    assert len(info.value.problems) == 5


def test_registry_problems_name_the_key_and_valid_choices(tmp_path):
    text = BASE.replace('family = "linear"', 'family = "transformer"').replace(
        "params = { hidden = [16], epochs = 2 }", "params = { hiden = [16] }").replace(
        'attack = "fgsm"', 'attack = "fgsn"').replace("steps = 3", "stepz = 3").replace(
        "eps = [0.2]", "eps = [1.5]\nmodels = [\"cnn\"]")
    text += '[[datasets]]\nname = "mnist"\n[[defenses]]\ndefense = "magic"\n'
    probs = problems_of(text, data_root=tmp_path)
    joined = "\n".join(probs)
    assert "s.toml: datasets[1].name: dataset 'mnist' is missing" in joined
    assert "models[0].family: unknown model 'transformer'; valid: cnn, " in joined
    assert "linear, mlp" in joined
    assert "models[1].params: unknown parameter(s) ['hiden'] for model 'mlp'" in joined
    assert "attacks[0].attack: unknown attack 'fgsn'; valid:" in joined and "fgsm" in joined
    assert "attacks[1].params.stepz: unknown parameter of attack 'pgd'; valid:" in joined
    assert "attacks[1].eps: [1.5] exceed 1" in joined
    assert "attacks[1].models: 'cnn' is not one of this spec's models" in joined
    assert "defenses[0].defense: unknown defense 'magic'; valid: none" in joined


def test_load_spec_reports_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "absent.toml")
    (tmp_path / "broken.toml").write_text("[sweep\n")
    with pytest.raises(SpecError, match="broken.toml: not valid TOML"):
        load_spec(tmp_path / "broken.toml")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_specs_are_valid(path, mnist_root_or_none):
    spec = load_spec(path)
    if any(d.name == "mnist" for d in spec.datasets) and mnist_root_or_none is None:
        pytest.skip("MNIST files absent")
    validate([spec], data_root=mnist_root_or_none)
    assert expand([spec])


@pytest.fixture()
def mnist_root_or_none(request):
    try:
        return request.getfixturevalue("mnist_root")
    except pytest.skip.Exception:
        return None


def test_adaptive_and_detector_rules():
    text = BASE + spec_text(
        defenses=[{"name": "none"}, {"name": "at", "defense": "fgsm_rs", "params": {"eps": 0.1}}],
        attacks=[{**PGD3, "adaptive": True}, {"name": "noisy", "attack": "noise", "adaptive": True}])
    probs = problems_of(text)
    assert any("attacks[2].adaptive: adaptive attacks run against detector-like defenses"
               in p for p in probs)
    assert any("attacks[3].adaptive: no adaptive version of 'noise'; valid: fgsm, pgd"
               in p for p in probs)
    # without a wrapper defense, adaptive entries expand to nothing
    spec = parse_spec(text.replace('attack = "noise"\nadaptive = true', 'attack = "noise"'),
                      "s.toml")
    labels = [c.label for c in expand([spec])]
    assert labels.count("digits/small-mlp/at/pgd-3/seed0") == 1
    assert len(labels) == 2 * 2 * 3


def test_detector_scoring_params_are_checked():
    text = BASE.replace("steps = 3", "steps = 3, restarts = 2") + """
[[defenses]]
name = "det"
defense = "detector"
params = { eps = 0.3 }
models = ["small-mlp"]
"""
    from robustkit import defenses

    if "detector" not in defenses.names():
        pytest.skip("detector defense not available")
    probs = problems_of(text)
    assert any("attacks[1].params: ['restarts'] cannot be used when scoring 'det'" in p
               for p in probs)


def test_same_cell_in_two_specs_runs_once_with_both_eps_grids():
    a = parse_spec(BASE, "a.toml")
    b = parse_spec(BASE.replace("eps = [0.2]", "eps = [0.3, 0.2]").replace(
        'name = "pgd-3"', 'name = "pgd-three"'), "b.toml")
    cells = expand([a, b])
    assert len(cells) == 4
    pgd = [c for c in cells if c.attack.attack == "pgd"]
    assert [c.eps for c in pgd] == [(0.2, 0.3)] * 2 and pgd[0].attack.name == "pgd-3"
