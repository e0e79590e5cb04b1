"""A small but realistic sweep output folder (results.csv, run.json, artifacts/) for report tests.

Numbers follow the shapes of real digits runs (accuracy falling with eps, UAP fooling
rates rising with xi, a detector that is weaker against its adaptive attack); the
images are real digits test inputs, the perturbations real tensors of the right shapes.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from robustkit import load_dataset

MODELS = [  # (display name, family, clean accuracy, fragility)
    ("linear", "linear", 0.95, 9.0), ("quadratic", "svm", 0.97, 6.0),
    ("cubic", "svm", 0.97, 5.5), ("RBF(1)", "svm", 0.98, 4.0), ("RBF(0.1)", "svm", 0.96, 7.0),
    ("gmm", "gmm", 0.94, 5.0), ("mlp", "mlp", 0.97, 6.5), ("cnn", "cnn", 0.98, 5.0),
]
ATTACKS = {"fgsm": 1.0, "pgd": 1.4, "deepfool": 1.2, "uap": 0.45, "uap_sgd": 0.55, "noise": 0.08}
EPS = [0.0, 0.05, 0.1, 0.2, 0.3]
CLASSES = [str(k) for k in range(10)]


def _row(model: str, family: str, defense: str, attack: str, eps: float, clean: float,
         robust: float, **extra: object) -> dict:
    return {"dataset": "digits", "model": model, "family": family, "defense": defense,
            "defense_method": defense, "attack": attack, "attack_method": attack, "eps": eps,
            "seed": 0, "status": "ok", "error": "", "adaptive": False, "n": 450,
            "clean_accuracy": clean, "robust_accuracy": robust,
            "success_rate": 1 - robust / clean, "fooling_rate": (clean - robust) * 1.02,
            "misclassification_rate": 1 - robust, "l2_mean": eps * 5.1, "l2_median": eps * 5.0,
            "linf_mean": eps, "linf_median": eps, "seconds": 0.02 + eps,
            "samples_per_second": 450 / (0.02 + eps), "device": "cpu", **extra}


def attack_rows() -> list[dict]:
    rows = []
    jitter = np.random.default_rng(1).uniform(0.6, 1.4, (len(MODELS), len(ATTACKS)))
    for i, (model, family, clean, frag) in enumerate(MODELS):
        for j, (attack, strength) in enumerate(ATTACKS.items()):
            for eps in EPS:
                robust = clean * math.exp(-frag * jitter[i, j] * strength * eps)
                extra = {"masking_flags": "white_box_beats_noise: PGD 0.55 vs noise 0.52"
                         if (model, attack, eps) == ("gmm", "pgd", 0.3) else ""}
                rows.append(_row(model, family, "none", attack, eps, clean, robust, **extra))
    return rows


def defense_rows() -> list[dict]:
    rows = []
    plans = [("cnn", "cnn", "fgsm_rs", 0.975, 1.5, 3.1), ("cnn", "cnn", "pgd", 0.972, 1.2, 7.9),
             ("mlp", "mlp", "universal", 0.965, 3.0, 1.1), ("RBF(1)", "svm", "retrain", 0.975, 2.5, 2.0),
             ("cnn", "cnn", "detector", 0.98, 0.4, 1.3)]
    for model, family, defense, clean, frag, ratio in plans:
        for attack in ("fgsm", "pgd", "uap"):
            for eps in ((0.0, 0.1, 0.3) if attack == "pgd" else (0.1, 0.3)):
                robust = clean * math.exp(-frag * ATTACKS[attack] * eps)
                extra: dict = {"train_seconds": 12.0 * ratio, "train_ratio": ratio, "masking_flags": ""}
                if defense == "detector":
                    extra.update(detection_auc=0.99 - eps / 10, tpr_at_5fpr=0.97 - eps / 5,
                                 system_accuracy=robust, clean_system_accuracy=0.95,
                                 rejection_rate=0.3)
                if defense == "fgsm_rs" and attack == "pgd" and eps == 0.3:
                    extra["masking_flags"] = "iterative_not_weaker: PGD 0.62 vs FGSM 0.58"
                rows.append(_row(model, family, defense, attack, eps, clean, robust, **extra))
        if defense == "detector":
            for eps in (0.1, 0.3):
                rows.append(_row(model, family, defense, "pgd", eps, clean, 0.35 - eps,
                                 adaptive=True, detection_auc=0.62, tpr_at_5fpr=0.12,
                                 system_accuracy=0.4 - eps, clean_system_accuracy=0.95,
                                 rejection_rate=0.05))
    return rows


def _save(path: Path, tensors: dict, meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous().clone() for k, v in tensors.items()}, str(path),
              metadata={k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()})


def write_artifacts(out: Path, models: list[tuple] = MODELS) -> None:
    """UAPs and DeepFool perturbations per model (real digits inputs), one ROC per detector row."""
    te = load_dataset("digits", "test", seed=0)
    g = torch.Generator().manual_seed(0)
    firsts = [int((te.y == c).nonzero()[0]) for c in range(8)]
    x_gal, y_gal = te.x[firsts], te.y[firsts]
    means = torch.stack([te.x[te.y == c].mean(0) for c in range(10)])
    for k, (model, family, _, frag) in enumerate(models):
        meta = {"dataset": "digits", "model": model, "family": family, "defense": "none",
                "seed": 0, "classes": CLASSES}
        smooth = torch.nn.functional.avg_pool2d(torch.randn(1, 1, 10, 10, generator=g), 3, 1)
        v = 0.3 * torch.sign(smooth[0])
        x = te.x[:6]
        flips = torch.rand(6, generator=g) < min(0.9, frag / 8)
        pred_adv = torch.where(flips, (te.y[:6] + 3 + k) % 10, te.y[:6])
        _save(out / "artifacts" / "uap" / "digits" / f"{model}__none__uap__eps0.3__seed0.safetensors",
              {"v": v, "x": x, "pred_clean": te.y[:6], "pred_adv": pred_adv},
              {**meta, "attack": "uap", "eps": 0.3})
        target = (y_gal + 1 + k % 3) % 10
        delta = (means[target] - x_gal) * (0.15 + 0.05 * k)
        _save(out / "artifacts" / "deepfool" / "digits" / f"{model}__none__seed0.safetensors",
              {"x": x_gal, "x_adv": (x_gal + delta).clamp(0, 1), "delta": delta, "y": y_gal,
               "pred_clean": y_gal, "pred_adv": target, "l2": delta.flatten(1).norm(dim=1)},
              {**meta, "attack": "deepfool"})
    rng = np.random.default_rng(0)
    for eps, adaptive, gap in ((0.1, False, 2.5), (0.3, False, 3.5), (0.3, True, 0.4)):
        neg, pos = rng.normal(0, 1, 300), rng.normal(gap, 1, 300)
        thr = np.sort(np.r_[neg, pos])[::-1]
        fpr = [float((neg >= t).mean()) for t in thr]
        tpr = [float((pos >= t).mean()) for t in thr]
        path = out / "artifacts" / "roc" / "digits" / f"cnn__detector__pgd__eps{eps}__{adaptive}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"dataset": "digits", "model": "cnn", "defense": "detector",
                                    "attack": "pgd", "eps": eps, "adaptive": adaptive,
                                    "fpr": [0.0, *fpr], "tpr": [0.0, *tpr]}))


def run_json() -> dict:
    spec = '[sweep]\nname = "digits"\nseeds = [0]\neps = [0.05, 0.1, 0.2, 0.3]\n\n' \
           '[[models]]\nname = "RBF(1)"\nfamily = "svm"\nkernel = "rbf"\ngamma = 1.0\n'
    return {"started": "2025-01-01T10:00:00+00:00", "finished": "2025-01-01T10:03:12+00:00",
            "command": ["robustkit", "sweep", "attacks/digits.toml"],
            "specs": [{"path": "attacks/digits.toml", "name": "digits", "text": spec}],
            "seeds": [0], "device": "cpu", "workers": 2, "seconds": 192.4,
            "versions": {"robustkit": "0.1.0", "torch": "2.14.0", "python": "3.11.7"},
            "cells": {"total": 60, "skipped": 0, "run": 60, "errors": 1}}


def make_run(out: Path, *, defenses: bool = True, artifacts: bool = True,
             failures: bool = True) -> Path:
    """Write a sweep output folder into ``out`` and return it."""
    out.mkdir(parents=True, exist_ok=True)
    rows = attack_rows() + (defense_rows() if defenses else [])
    if failures:
        rows.append({**_row("cubic", "svm", "none", "foolbox:L2CarliniWagnerAttack", 0.3, 0.97, 0.0),
                     "status": "error", "error": "RuntimeError: CUDA out of memory <at cw.py:88>"})
    pd.DataFrame(rows).to_csv(out / "results.csv", index=False)
    (out / "run.json").write_text(json.dumps(run_json()))
    if artifacts:
        write_artifacts(out)
    return out


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    return make_run(tmp_path / "run")


@pytest.fixture()
def run_factory():
    """``make_run`` itself, for tests that want a folder with parts left out."""
    return make_run


@pytest.fixture(scope="session")
def built_report(tmp_path_factory) -> Path:
    """index.html of the full fake run, built once per session (plots cost seconds)."""
    from robustkit import report

    return report.build(make_run(tmp_path_factory.mktemp("report") / "run"))
