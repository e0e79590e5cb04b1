"""Three tasks the AutoAttack benchmark had not used, for the lean version's bars: a
non-neural model on a table (breast-cancer, 30 features, 2 classes, GMM), a 100-class
table (generated), and the digits under the linear model. Each: (model, x, y, eps grid).
Models are trained once and cached in runs/bench-attacks/ like the others."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from attacks_common import CACHE
from attacks_common import load as load_bench

from robustkit import models, store

TASKS = ("breast-cancer-gmm", "table100-mlp", "digits-linear")
N_TEST = 300  # test rows per task at most


def _minmax(train: np.ndarray, *rest: np.ndarray) -> list[torch.Tensor]:
    lo, hi = train.min(0), train.max(0)
    return [torch.tensor(((a - lo) / np.maximum(hi - lo, 1e-12)).clip(0, 1),
                         dtype=torch.float32) for a in (train, *rest)]


def breast_cancer() -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    xs, ys = load_breast_cancer(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(xs, ys, test_size=0.25, random_state=0, stratify=ys)
    a, b = _minmax(xtr, xte)
    return a, torch.tensor(ytr), b, torch.tensor(yte)


def table100() -> tuple[torch.Tensor, ...]:
    """100 classes, 40 features (30 informative), 60 rows per class (seed 0)."""
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split

    xs, ys = make_classification(n_samples=6000, n_features=40, n_informative=30,
                                 n_redundant=0, n_classes=100, n_clusters_per_class=1,
                                 class_sep=3.0, random_state=0)
    xtr, xte, ytr, yte = train_test_split(xs, ys, test_size=0.2, random_state=0, stratify=ys)
    a, b = _minmax(xtr, xte)
    return a, torch.tensor(ytr), b, torch.tensor(yte)


def _fit(name: str, family: str, xtr: torch.Tensor, ytr: torch.Tensor, k: int,
         **params: Any) -> torch.nn.Module:
    folder = CACHE / f"unseen-{name}"
    if (folder / "model.json").is_file():
        return store.load(folder)[0].eval()
    model = models.create(family, **params).fit(xtr, ytr, n_classes=k, seed=0)
    store.save(model, folder, family=family)
    return model.eval()


def tasks(names: list[str] | None = None
          ) -> dict[str, tuple[torch.nn.Module, torch.Tensor, torch.Tensor, list[float]]]:
    out = {}
    if not names or "breast-cancer-gmm" in names:
        xtr, ytr, xte, yte = breast_cancer()
        out["breast-cancer-gmm"] = (_fit("breast-cancer-gmm", "gmm", xtr, ytr, 2),
                                    xte[:N_TEST], yte[:N_TEST], [0.05, 0.1])
    if not names or "table100-mlp" in names:
        xtr, ytr, xte, yte = table100()
        out["table100-mlp"] = (_fit("table100-mlp", "mlp", xtr, ytr, 100, epochs=30),
                               xte[:N_TEST], yte[:N_TEST], [0.02, 0.05])
    if not names or "digits-linear" in names:
        data = load_bench("digits")
        assert data is not None
        model = _fit("digits-linear", "linear", data.train.x, data.train.y, 10)
        out["digits-linear"] = (model, data.test.x[:N_TEST], data.test.y[:N_TEST],
                                [0.05, 0.1])
    return out
