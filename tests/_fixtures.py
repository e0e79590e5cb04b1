"""Shared test helpers (importable as `_fixtures` from any test: tests/ is on sys.path)."""
from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import pytest
import torch

from robustkit import load_dataset, models, store

# Small, fast settings per family: enough to be a real classifier, quick to train.
FAST_PARAMS: dict[str, dict] = {
    # The mini-batch solver keeps the defense tests on the model they were written for
    # (10 Adam epochs: smaller weights, more robust than the L-BFGS optimum).
    "linear": {"solver": "minibatch", "epochs": 10},
    "svm": {"kernel": "rbf"},
    "gmm": {},
    "mlp": {"hidden": (64,), "epochs": 10},
    "cnn": {"epochs": 8},
}
# The families every contract test runs over (resnet18 is exercised on its own: too slow).
FAMILIES = sorted(FAST_PARAMS)

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"


@functools.cache
def digits(split: str):
    """The digits split (seed 0), cached."""
    return load_dataset("digits", split, seed=0)


@functools.cache
def fitted_model(name: str) -> torch.nn.Module:
    """A family's model trained on the digits train split (cached for the session).
    Do not modify it in place: it is shared by every test."""
    tr = digits("train")
    spec = models.create(name, **FAST_PARAMS[name])
    return spec.fit(tr.x, tr.y, n_classes=10, seed=0)


# Runs a test on the MLP only: conftest's cached `model` fixture, parametrized by family.
ON_MLP = pytest.mark.parametrize("family", ["mlp"])


@functools.cache
def toy_model(dataset: str, family: str) -> torch.nn.Module:
    """A family's model (RBF kernel for "svm") fit on a 2-D toy dataset's train split
    (moons, xor, blobs; seed 0), cached. Do not modify it in place."""
    tr = load_dataset(dataset, "train", seed=0)
    spec = models.create(family, **({"kernel": "rbf"} if family == "svm" else {}))
    return spec.fit(tr.x, tr.y, n_classes=int(tr.y.max()) + 1, seed=0)


def toy_task(dataset: str, family: str, n: int = 60
             ) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """``toy_model(dataset, family)`` and the first n points and labels of the test split."""
    te = load_dataset(dataset, "test", seed=0)
    return toy_model(dataset, family), te.x[:n], te.y[:n]


def auc_by_pairs(clean: torch.Tensor, adv: torch.Tensor) -> float:
    """ROC AUC of detector scores, counted over (adversarial, clean) pairs (Mann-Whitney,
    ties count half): an independent check of scikit-learn's roc_auc_score."""
    clean, adv = clean.double(), adv.double()
    pairs = (adv[:, None] > clean[None, :]).double() + 0.5 * (adv[:, None] == clean[None, :])
    return float(pairs.mean())


def tpr_at_fpr(clean: torch.Tensor, adv: torch.Tensor, fpr: float = 0.05) -> float:
    """The best true-positive rate at a false-positive rate <= ``fpr``, thresholding at
    every score (flagged: score >= threshold)."""
    clean, adv = clean.double(), adv.double()
    cuts = torch.cat([clean, adv]).unique()
    rates = [((clean >= t).double().mean(), (adv >= t).double().mean()) for t in cuts]
    return float(max(t for f, t in rates if f <= fpr))


def save_linear(root: Path) -> Path:
    """Train a linear model on digits (3 epochs), store it as ``root / "lin"``; return root."""
    module, rec = models.train("linear", "digits", epochs=3)
    store.save(module, root / "lin", record=rec)
    return root


def json_rebuilt(family: str, model: torch.nn.Module, x: torch.Tensor) -> dict:
    """Check that the family rebuilt from the arch after a JSON round trip gives the same
    logits on x; return that arch."""
    arch = json.loads(json.dumps(model.arch))
    clone = models.build(family, arch)
    clone.load_state_dict(model.state_dict())
    assert torch.equal(clone(x), model(x))
    return arch


def follows_dtype(model: torch.nn.Module, x: torch.Tensor) -> None:
    """Check that float32 and float64 inputs give logits of their dtype and device, shape
    (N, 10), and that a float64 copy of the model agrees with it."""
    for dtype in (torch.float32, torch.float64):
        out = model(x.to(dtype))
        assert out.dtype == dtype and out.device == x.device and out.shape == (len(x), 10)
    # A copy: the cached fixture model is shared by every test.
    assert torch.allclose(model(x.double()), copy.deepcopy(model).double()(x.double()))
