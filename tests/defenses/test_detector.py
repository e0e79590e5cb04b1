"""The UAP detector: detects unseen UAPs at the trained radius, holds its 5% FPR on
held-out clean data, stays differentiable, round-trips through the store; the system's
decision and scoring rules on a hand-made example."""
from __future__ import annotations

import functools

import pytest
import torch
from conftest import fitted_model
from sklearn.metrics import roc_auc_score

from robustkit import defenses, load_dataset
from robustkit.attacks.universal import uap_sgd
from robustkit.defenses.detection import detection_scores
from robustkit.defenses.detector import Detector, fit_detector
from robustkit.defenses.system import DefendedSystem, load_system, save_system, system_accuracy

XI = 0.3
UAP = {"epochs": 3}


@functools.cache
def _fitted():
    x, y, _ = load_dataset("digits", "train", seed=0)
    model = fitted_model("cnn")
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    snapshot.update({f"grad:{k}": p.grad for k, p in model.named_parameters()})
    res = defenses.defend("detector", "cnn", x, y, eps=XI, base=model, n_uaps=3,
                          n_synthetic=6, uap_epochs=3, epochs=10)
    return model, snapshot, res


@pytest.fixture()
def fitted():
    return _fitted()


def _fresh_uap(model, digits_train, seed=0):
    return uap_sgd(model, digits_train.x, digits_train.y, xi=XI, norm="linf", seed=seed,
                   **UAP).v


def test_detects_unseen_uaps_at_the_trained_xi(fitted, digits_train, digits_test):
    model, _, res = fitted
    det = res.extras["detector"]
    system = DefendedSystem(model, det)
    v = _fresh_uap(model, digits_train)  # seed 0: not in the detector's pool (seeds 1..3)
    x_adv = (digits_test.x + v).clamp(0, 1)
    clean, adv = system.score(digits_test.x), system.score(x_adv)
    auc = roc_auc_score([0] * len(clean) + [1] * len(adv), torch.cat([clean, adv]).numpy())
    assert auc >= 0.9
    assert res.model is model and res.defense == "detector"


def test_threshold_is_the_5_percent_fpr_quantile_of_its_holdout(fitted, digits_test):
    import numpy as np

    _, _, res = fitted
    det = res.extras["detector"]
    # The holdout fit_detector sets aside (seed 0): the first 20% of its permutation.
    x = load_dataset("digits", "train", seed=0).x
    cal = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[
        :round(0.2 * len(x))]
    with torch.no_grad():
        scores = np.sort(det(x[cal]).double().numpy())
    n = len(scores)
    # The "higher" (1 - 0.05) quantile: the smallest score with at most 5% of the
    # interpolation grid above it; at most 5% of the holdout is flagged, and no more
    # than one score less than that would be.
    assert float(det.threshold) == pytest.approx(scores[int(np.ceil(0.95 * (n - 1)))],
                                                 rel=1e-6)
    flagged = int((scores > float(det.threshold)).sum())
    assert flagged <= 0.05 * n and flagged >= 0.05 * n - 2
    # On unseen clean test inputs the FPR stays near 5% (3 binomial standard deviations
    # of the test and holdout sizes).
    fpr = float(det.flag(digits_test.x).double().mean())
    sd = (0.05 * 0.95 * (1 / len(digits_test.x) + 1 / n)) ** 0.5
    assert abs(fpr - 0.05) <= 3 * sd


def test_fitting_leaves_the_model_alone_and_detector_is_differentiable(fitted, digits_test):
    model, snapshot, res = fitted
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshot[k])
    for k, p in model.named_parameters():  # .grad left as training left it (same object)
        assert p.grad is snapshot[f"grad:{k}"]
    assert not model.training
    x = digits_test.x[:8].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(res.extras["detector"](x).sum(), x)
    assert g.shape == x.shape and float(g.abs().sum()) > 0


def test_store_round_trip_gives_the_same_scores(fitted, digits_test, tmp_path):
    model, _, res = fitted
    system = DefendedSystem(model, res.extras["detector"])
    save_system(system, tmp_path, params={"eps": XI})
    again = load_system(tmp_path, model)
    torch.testing.assert_close(again.score(digits_test.x), system.score(digits_test.x))
    assert float(again.detector.threshold) == float(system.detector.threshold)


def test_raw_features_and_flat_inputs(digits_train):
    model = fitted_model("mlp")
    x, y = digits_train.x[:300], digits_train.y[:300]
    det = fit_detector(model, x, y, features="raw", positives=("fgsm", "noise"), epochs=2)
    assert det(x[:5]).shape == (5,)
    flat = Detector([64], features="dct", hidden=())
    assert flat(x[:5].reshape(5, -1)).shape == (5,)


@pytest.mark.parametrize("kwargs, match", [
    ({"features": "fft"}, "features"),
    ({"positives": ("clean",)}, "positives"),
    ({"negatives": ("noise",)}, "negatives"),
    ({"positives": ("noise",), "negatives": ("clean", "noise")}, "both"),
    ({"eps": (0.3, 0.1)}, "eps"),
    ({"holdout": 1.5}, "holdout"),
])
def test_bad_arguments_raise(kwargs, match, digits_train):
    with pytest.raises(ValueError, match=match):
        fit_detector(fitted_model("linear"), digits_train.x, digits_train.y, **kwargs)


class _Fixed(torch.nn.Module):
    """A 'classifier' predicting the class stored in feature 1 (as a 3-class one-hot)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(x[:, 1].round().long(), 3).float()


def _flag_x0_detector() -> Detector:
    det = Detector([2], features="raw", hidden=())
    with torch.no_grad():  # logit = 10 * (x0 - 0.5): flagged iff x0 > 0.5
        det.standardize.mean.zero_()
        det.standardize.scale.fill_(1.0)
        det.head[0].weight.copy_(torch.tensor([[10.0, 0.0]]))
        det.head[0].bias.fill_(-5.0)
    return det


def test_decision_and_scoring_rules_by_hand():
    det = _flag_x0_detector()
    system = DefendedSystem(_Fixed(), det)
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 2.0], [1.0, 2.0]])
    y = torch.tensor([0, 1, 1, 2])
    dec = system.decide(x)
    assert dec.tolist() == [0, -1, 2, -1]
    # clean: rejections are errors (only sample 0 is right); attacked: rejections defend
    assert system_accuracy(dec, y, adversarial=False) == 0.25
    assert system_accuracy(dec, y, adversarial=True) == 0.75
    # with a rectifier, flagged inputs are classified after rectification instead
    rect = torch.nn.Identity()
    assert DefendedSystem(_Fixed(), det, rect).decide(x).tolist() == [0, 1, 2, 2]  # type: ignore[arg-type]


def test_rejection_rate_counts_rejections_not_flags():
    # class 1 iff x0 + x1 > 0.5: FGSM at 0.1 moves (0.45, 0) to (0.55, 0.1), which fools
    # the classifier and is flagged by the detector
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))
        model.bias.copy_(torch.tensor([0.5, -0.5]))
    x, y = torch.tensor([[0.45, 0.0]] * 4), torch.zeros(4, dtype=torch.long)
    det = _flag_x0_detector()

    def row(rectifier):
        system = DefendedSystem(model, det, rectifier)
        (r,) = detection_scores(model, system, x, y, attacks=("fgsm",), eps=(0.1,),
                                adaptive=False)
        return r

    rejecting, rectifying = row(None), row(torch.nn.Identity())
    for r in (rejecting, rectifying):
        assert r["tpr_at_threshold"] == 1.0 and r["fpr_at_threshold"] == 0.0
        assert r["classifier_robust_accuracy"] == 0.0 and r["clean_rejection_rate"] == 0.0
    # a detector alone rejects what it flags: every attacked input, all defended
    assert rejecting["rejection_rate"] == 1.0 and rejecting["system_accuracy"] == 1.0
    # with a rectifier flagged inputs are rectified and classified (here: wrongly)
    assert rectifying["rejection_rate"] == 0.0 and rectifying["system_accuracy"] == 0.0
