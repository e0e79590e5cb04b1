"""Issue 12: every bad input to an attack is refused at one boundary (attacks.base
``check_inputs`` + the model-output check), for every registered attack, before any work.

The tests are parametrized over the attack registry, so attacks added later get them too.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from _fixtures import FAMILIES, digits, fitted_model

from robustkit import attacks, models
from robustkit.evaluate import evaluate

# Few iterations: these tests are about the boundary, not about attack strength.
FAST = {"pgd": {"steps": 2}, "pgd_l2": {"steps": 2}, "deepfool": {"max_iter": 3},
        "deepfool_linf": {"max_iter": 3}, "uap": {"max_passes": 1}, "uap_l2": {"max_passes": 1},
        "uap_sgd": {"epochs": 1}, "uap_sgd_l2": {"epochs": 1}, "patch": {"k": 2}}
ATTACKS = attacks.names()


def _run(name, model, x, y, **kw):
    return attacks.get(name).fn(model, x, y, eps=0.1, **FAST.get(name, {}), **kw)


def _data(n=12):
    d = digits("test")
    return d.x[:n], d.y[:n]


class FewRows(torch.nn.Module):
    """Returns logits for the first input only, whatever the batch (a broken model)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)[:1]


class NaNLogits(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) * float("nan")


@pytest.mark.parametrize("name", ATTACKS)
@pytest.mark.parametrize("label", [10, -1])
def test_labels_outside_the_models_classes_are_refused(name, label):
    # defect 4: noise/uap/uap_sgd counted them as successes, fgsm/pgd/deepfool raised a raw
    # "index 10 is out of bounds"
    x, y = _data()
    y = y.clone()
    y[3] = label
    with pytest.raises(ValueError, match=r"y must hold class indices in \[0, 10\)"):
        _run(name, fitted_model("linear"), x, y)


@pytest.mark.parametrize("name", ["fgsm", "fgm", "pgd"])
def test_targets_outside_the_models_classes_are_refused(name):
    x, y = _data()
    target = torch.full_like(y, 12)
    with pytest.raises(ValueError, match=r"target must hold class indices in \[0, 10\)"):
        _run(name, fitted_model("linear"), x, y, target=target)


@pytest.mark.parametrize("name", ATTACKS)
@pytest.mark.parametrize("broken, match", [(FewRows, r"shape \(N, n_classes\).*\(1, 10\)"),
                                           (NaNLogits, "NaN or infinite logits")])
def test_broken_model_outputs_are_refused(name, broken, match):
    # defect 8: noise reported 20 successes from 1 prediction; NaN logits gave success 0.9
    x, y = _data()
    with pytest.raises(ValueError, match=match):
        _run(name, broken(fitted_model("linear")), x, y)


def test_a_model_turning_nan_on_perturbed_inputs_is_caught_after_the_attack():
    # the probe sees finite logits on x; the prediction on x_adv is checked as well
    inner = fitted_model("linear")

    class NaNOff(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            out = self.inner(x)
            return torch.where((x.flatten(1) % 0.0625 != 0).any(1, keepdim=True),
                               torch.full_like(out, float("nan")), out)

    x, y = _data()
    with pytest.raises(ValueError, match="NaN or infinite logits"):
        attacks.get("noise").fn(NaNOff(), x, y, eps=0.01)


@pytest.mark.parametrize("family", FAMILIES)
def test_float64_inputs_are_cast_to_the_model_and_x_adv_keeps_their_dtype(family):
    # defect 7: "mat1 and mat2 must have the same dtype" on mlp, cnn, linear
    x, y = _data()
    model = fitted_model(family)
    r64 = attacks.get("fgsm").fn(model, x.double(), y, eps=0.1)
    r32 = attacks.get("fgsm").fn(model, x, y, eps=0.1)
    assert r64.x_adv.dtype == torch.float64
    assert float(r64.linf.max()) <= 0.1 + 1e-12
    # the same steps up to rounding of the gradient's sign where it is ~0 (svm and gmm
    # compute in x's dtype, the others cast x to float32)
    assert float((r64.x_adv.float() - r32.x_adv).abs().gt(1e-6).float().mean()) < 0.05


@pytest.mark.parametrize("name", ATTACKS)
def test_float64_inputs_work_for_every_attack(name):
    x, y = _data(6)
    res = _run(name, fitted_model("mlp"), x.double(), y)
    assert res.x_adv.dtype == torch.float64 and res.x_adv.shape == x.shape


def test_a_foreign_model_with_another_dtype_gets_a_clear_type_error():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    x, y = _data()
    with pytest.raises(TypeError, match=r"x is torch.float64 but the model computes in "
                                        r"torch.float32"):
        attacks.get("fgsm").fn(model, x.double(), y, eps=0.1)


@pytest.mark.parametrize("family", FAMILIES)
def test_inputs_of_another_shape_name_the_expected_shape(family):
    # defect 13: raw torch errors for a 28x28 batch on an 8x8 model
    x = torch.rand(3, 1, 28, 28)
    y = torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match=rf"model '{family}' expects each input of shape "
                                         r"\(1, 8, 8\).*got inputs of shape \(1, 28, 28\)"):
        attacks.get("fgsm").fn(fitted_model(family), x, y, eps=0.1)
    with pytest.raises(ValueError, match=r"expects each input of shape \(1, 8, 8\)"):
        fitted_model(family)(x)


@pytest.mark.parametrize("family", FAMILIES)
def test_flattening_families_take_flat_inputs_and_the_cnn_does_not(family):
    x, _ = _data()
    model = fitted_model(family)
    if family == "cnn":
        with pytest.raises(ValueError, match=r"'cnn' expects each input of shape \(1, 8, 8\)"):
            model(x.flatten(1))
    else:
        torch.testing.assert_close(model(x.flatten(1)), model(x))


@pytest.mark.parametrize("family", FAMILIES)
def test_empty_batches_give_empty_logits(family):
    # defect 13: reshape errors on empty batches (all but cnn)
    x, _ = _data()
    assert fitted_model(family)(x[:0]).shape == (0, 10)


@pytest.mark.parametrize("name", [n for n in ATTACKS
                                  if attacks.get(n).kind != "universal"])
def test_empty_batches_give_empty_results(name):
    x, y = _data()
    res = _run(name, fitted_model("mlp"), x[:0], y[:0])
    assert res.x_adv.shape == (0, 1, 8, 8) and res.success.shape == (0,)


@pytest.mark.parametrize("name", ["uap", "uap_sgd"])
def test_universal_attacks_refuse_an_empty_batch(name):
    x, y = _data()
    with pytest.raises(ValueError, match="x is empty"):
        _run(name, fitted_model("mlp"), x[:0], y[:0])


@pytest.mark.parametrize("bad, error, match", [
    (lambda x, y: (x.long(), y), TypeError, "x must be a floating-point tensor, got a torch.int64"),
    (lambda x, y: (x, y.int()), TypeError, "y must be an int64 tensor, got a torch.int32"),
    (lambda x, y: (x[0, 0, 0], y[:8]), ValueError, r"x must be a batch \(N, ...\)"),
    (lambda x, y: (x, y[:-1]), ValueError, r"y must have shape \(12,\)"),
    (lambda x, y: (x * 2, y), ValueError, r"x must lie in \[0, 1\]"),
])
def test_bad_tensors_name_the_parameter(bad, error, match):
    x, y = _data()
    xb, yb = bad(x, y)
    with pytest.raises(error, match=match):
        attacks.get("fgsm").fn(fitted_model("linear"), xb, yb, eps=0.1)


@pytest.mark.parametrize("eps", [float("nan"), float("inf"), -0.1, True])
@pytest.mark.parametrize("name", ["fgsm", "pgd", "noise"])
def test_non_finite_or_negative_eps_is_refused(name, eps):
    x, y = _data()
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        attacks.get(name).fn(fitted_model("linear"), x, y, eps=eps)


def test_attacks_do_not_change_the_model_mode_when_refusing():
    model = fitted_model("mlp")
    model.train()
    try:
        x, y = _data()
        y = y.clone()
        y[0] = 99
        with pytest.raises(ValueError):
            attacks.get("fgsm").fn(model, x, y, eps=0.1)
        assert model.training
    finally:
        model.eval()


# Found by trying hostile inputs (beyond the issue's list).

def test_numpy_scalars_are_numbers_for_eps():
    x, y = _data()
    r = attacks.get("fgsm").fn(fitted_model("linear"), x, y, eps=np.float32(0.1))
    assert float(r.linf.max()) <= 0.1 + 1e-6


def test_a_model_returning_a_tuple_is_refused():
    inner = fitted_model("linear")

    class Tuple(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return (self.inner(x),)

    x, y = _data()
    with pytest.raises(ValueError, match="must return floating-point logits.*got tuple"):
        attacks.get("fgsm").fn(Tuple(), x, y, eps=0.1)


def test_evaluate_refuses_unknown_and_bad_attack_parameters_before_any_work():
    x, y = _data()
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['foo'\] for attack 'fgsm'; "
                                         r"valid: alpha, predict, random_start, target"):
        evaluate(fitted_model("linear"), "fgsm", x, y, eps=[0.1], foo=1)
    with pytest.raises(ValueError, match="steps=-3 is not valid.*restarts=0 is not valid"):
        evaluate(fitted_model("linear"), "pgd", x, y, eps=[0.1], steps=-3, restarts=0)


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, True])
def test_training_seeds_outside_what_numpy_takes_are_refused(seed):
    # were a raw scikit-learn InvalidParameterError naming train_test_split
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 4294967295\]"):
        models.train("linear", "digits", seed=seed, epochs=1)


def test_fitting_with_labels_beyond_n_classes_is_refused():
    # was a raw "IndexError: Target 4 is out of bounds"
    x, y = _data()
    with pytest.raises(ValueError, match=r"y must hold class indices in \[0, 3\)"):
        models.create("linear", epochs=1).fit(x, y, n_classes=3)


@pytest.mark.parametrize("family, arch", [
    ("mlp", {"input_shape": [1, 8, 8], "n_classes": 10, "hidden": [False]}),
    ("mlp", {"input_shape": [1, 8, 8], "n_classes": 1, "hidden": [4]}),
    ("linear", {"input_shape": [0], "n_classes": 10}),
    ("cnn", {"input_shape": [1, 8, 8], "n_classes": 10, "channels": [4], "hidden": 8}),
])
def test_modules_refuse_bad_constructor_arguments(family, arch):
    # a stored arch may be edited: MLP(hidden=[False]) built a zero-width layer
    with pytest.raises(ValueError, match=f"model '{family}': .* is not valid"):
        models.build(family, arch)


@pytest.mark.parametrize("seed", [-1, 1.5, 2**32])
def test_dataset_seeds_outside_what_numpy_takes_are_refused(seed):
    from robustkit import load_dataset

    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 4294967295\]"):
        load_dataset("digits", "test", seed=seed)


def test_fitting_on_inputs_outside_the_unit_box_is_refused():
    x, y = _data()
    with pytest.raises(ValueError, match=r"x must lie in \[0, 1\].*got range \[0, 3\]"):
        models.create("linear", epochs=1).fit(x * 3, y)


def test_a_defense_refuses_labels_beyond_n_classes_before_training():
    from robustkit import defenses

    x, y = _data()
    with pytest.raises(ValueError, match=r"y must hold class indices in \[0, 10\)"):
        defenses.defend("pgd", "linear", x, y + 5, eps=0.1, n_classes=10)


@pytest.mark.parametrize("name", ATTACKS)
def test_a_robustkit_model_with_nan_weights_is_caught(name):
    # robustkit models skip the probe forward (they know their class count): the attack's
    # own forward passes check the logits
    model = models.build("mlp", {"input_shape": [1, 8, 8], "n_classes": 10, "hidden": [8]})
    with torch.no_grad():
        model.net[0].weight.fill_(float("nan"))
    x, y = _data()
    with pytest.raises(ValueError, match="NaN or infinite logits"):
        _run(name, model.eval(), x, y)
