"""Issue 12 (defects 5, 6, 10): parameter values are validated for every model, attack and
defense before anything runs, and every problem is reported at once."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from robustkit import attacks, defenses, models
from robustkit.cli import main
from robustkit.params import choice, either, integer, integers, number, positive, problems
from robustkit.sweep.spec import SpecError, parse_spec
from robustkit.sweep.validate import validate


@pytest.mark.parametrize("rule, good, bad", [
    (integer(1), [1, 7], [0, -3, 1.5, True, "2", None]),
    (integer(0, none=True), [0, None], [-1, 0.5]),
    (number(0), [0, 0.5, 3], [-0.1, float("nan"), float("inf"), False, "1"]),
    (number(0, 1, open_low=True, open_high=True), [0.5], [0, 1, 1.5]),
    (positive(), [1e-9, 2], [0, -1]),
    (choice("a", "b"), ["a"], ["c", "", None, 1]),
    (integers(1, length=2), [[1, 2], (3, 4)], [[], [0, 0], [1], [1, 2, 3], "12", [1.0, 2]]),
    (either(integer(1), integers(1)), [3, [64, 32], []], ["10", [0], [-5], 0]),
])
def test_rules_accept_and_refuse(rule, good, bad):
    assert [rule(v) for v in good] == [None] * len(good)
    assert all(isinstance(rule(v), str) for v in bad)


def test_problems_lists_every_bad_value():
    found = problems({"a": -1, "b": "x", "c": 3}, {"a": integer(0), "b": choice("y")})
    assert found == ["a=-1 is not valid: expected an integer >= 0",
                     "b='x' is not valid: expected one of ['y']"]


@pytest.mark.parametrize("family, params, key", [
    # defect 6
    ("mlp", {"epochs": -1}, "epochs"),
    ("mlp", {"hidden": "10"}, "hidden"),
    ("mlp", {"hidden": [0]}, "hidden"),
    ("mlp", {"hidden": [-5]}, "hidden"),
    ("cnn", {"channels": []}, "channels"),
    ("cnn", {"channels": [0, 0]}, "channels"),
    ("linear", {"batch_size": 0}, "batch_size"),
    ("linear", {"lr": 0}, "lr"),
    ("linear", {"weight_decay": -1e-4}, "weight_decay"),
    ("svm", {"gamma": -1.0}, "gamma"),
    ("svm", {"gamma": ""}, "gamma"),
    ("svm", {"C": float("nan")}, "C"),
    ("gmm", {"n_components": True}, "n_components"),
    ("resnet18", {"epochs": 0}, "epochs"),
])
def test_bad_model_values_are_refused_before_fitting(family, params, key):
    with pytest.raises(ValueError, match=rf"model '{family}': {key}=.* is not valid: expected"):
        models.create(family, **params)


def test_model_check_reports_every_problem():
    found = models.check_params("mlp", {"epochs": -1, "lr": 0, "hidden": [0], "nope": 1})
    assert len(found) == 4 and "valid: activation" in found[0]


@pytest.mark.parametrize("family, params", [
    ("mlp", {"hidden": 32, "epochs": 1, "lr": 1}), ("mlp", {"hidden": []}),
    ("cnn", {"channels": [4, 8]}), ("svm", {"gamma": 0.5, "C": 2}), ("gmm", {"pca": None}),
])
def test_good_model_values_pass(family, params):
    assert models.check_params(family, params) == []


@pytest.mark.parametrize("name", attacks.names())
def test_every_attack_checks_its_defaults_and_declares_its_parameters(name):
    spec = attacks.get(name)
    assert spec.check({}) == []
    # every settable parameter has a rule (declared, or implied by its default's type),
    # except tensors passed by library callers
    assert set(spec.parameters()) - set(spec.rules) <= {"target", "x_val"}


@pytest.mark.parametrize("name, params, key", [
    ("pgd", {"steps": -3}, "steps"), ("pgd", {"restarts": 0}, "restarts"),
    ("pgd", {"loss": "hinge"}, "loss"), ("fgsm", {"alpha": -1}, "alpha"),
    ("fgsm", {"random_start": "yes"}, "random_start"), ("deepfool", {"candidates": 1}, "candidates"),
    ("uap", {"delta": 2}, "delta"), ("uap_sgd", {"lr": 0}, "lr"), ("patch", {"size": 0}, "size"),
])
def test_bad_attack_values_are_refused(name, params, key):
    (found,) = attacks.get(name).check(params)
    assert found.startswith(f"attack {name!r}: {key}=")


@pytest.mark.parametrize("name", defenses.names())
def test_every_defense_accepts_its_defaults(name):
    assert defenses.get(name).problems(None, {}) == []


@pytest.mark.parametrize("name, params, key", [
    ("pgd", {"steps": -3}, "steps"), ("pgd", {"epochs": 0}, "epochs"),
    ("fgsm_rs", {"recover_factor": 0}, "recover_factor"), ("universal", {"mix": 2}, "mix"),
    ("retrain", {"attack": "deepfool"}, "attack"), ("detector", {"fpr": 1}, "fpr"),
    ("prn", {"width": 0}, "width"),
])
def test_bad_defense_values_are_refused(name, params, key):
    with pytest.raises(ValueError, match=rf"defense '{name}': {key}=.* is not valid"):
        defenses.get(name).check("mlp" if name != "prn" else "cnn", params)


BAD_SPEC = """
[sweep]
seeds = [0]
eps = [0.1]
[[datasets]]
name = "digits"
[[models]]
name = "svm"
family = "svm"
params = { gamma = -1.0, C = 0 }
[[models]]
name = "mlp"
family = "mlp"
params = { epochs = -1 }
[[defenses]]
name = "pgd"
defense = "pgd"
params = { eps = 0.1, steps = -3 }
[[attacks]]
name = "pgd"
attack = "pgd"
params = { steps = -3, loss = "x", batch_size = 0 }
"""


def test_a_spec_reports_all_its_bad_values_at_once():
    # defect 5: gamma = -1.0 and pgd steps = -3 passed validation; and only some problems
    # were reported
    with pytest.raises(SpecError) as err:
        validate([parse_spec(BAD_SPEC)])
    text = "\n".join(err.value.problems)
    for needle in ("gamma=-1.0", "C=0", "epochs=-1", "defense 'pgd': steps=-3",
                   "attack 'pgd': steps=-3", "loss='x'", "batch_size=0"):
        assert needle in text
    assert len(err.value.problems) == 7


def _cli(*args):
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("args, needle", [
    # defect 10: each of these exited 1 (or 0) instead of 2
    (["train", "--model", "mlp", "--param", "epochs=-1"], "epochs=-1"),
    (["train", "--model", "svm", "--param", "gamma=-1"], "gamma=-1"),
    (["train", "--model", "svm", "--param", "gamma="], "gamma=''"),
    (["train", "--model", "mlp", "--param", "epoch=3"], "valid: activation, batch_size"),
    (["train", "--model", "mlp", "--seed", "-1"], "--seed"),
    (["attack", "--model", "mlp", "--attack", "fgsm", "--eps", "nan"], "not a finite number"),
    (["attack", "--model", "mlp", "--attack", "fgsm", "--eps", "inf"], "not a finite number"),
    (["attack", "--model", "mlp", "--attack", "fgsm", "--eps", "0.1", "--dataset", "foo"],
     "--dataset"),
    (["attack", "--model", "mlp", "--attack", "pgd", "--eps", "0.1", "--param", "stepz=3"],
     "valid: loss, norm, random_start"),
    (["attack", "--model", "mlp", "--attack", "pgd", "--eps", "0.1", "--param", "steps=-3"],
     "steps=-3"),
    (["attack", "--model", "mlp", "--attack", "pgd", "--eps", "0.1", "--seed", "-1"], "--seed"),
    (["defend", "--model", "mlp", "--defense", "pgd", "--eps", "0.1", "--param", "steps=-3"],
     "steps=-3"),
    (["defend", "--model", "mlp", "--defense", "pgd", "--eps", "nan"], "not a finite number"),
    (["defend", "--model", "mlp", "--defense", "pgd", "--eps", "0.1", "--model-param",
      "hidden=[0]"], "hidden=[0]"),
])
def test_cli_usage_errors_exit_2_before_any_work(tmp_path, args, needle):
    res = _cli(*args, "--workdir", str(tmp_path))
    assert res.exit_code == 2, res.output
    assert needle in res.output
    assert list(tmp_path.iterdir()) == []  # nothing trained, nothing written
