"""Universal perturbations: robustkit's uap / uap_sgd vs ART's UniversalPerturbation.

All at Linf xi = 0.3, fitted on the train split, fooling rate (prediction on clamp(x + v)
!= prediction on x, the UAP paper's definition) measured here, the same way for every v,
on the held-out test split and on the fitting data. ART: inner attacker DeepFool (its
defaults, progress bars off), delta 0.2, at most 5 passes; robustkit's ``uap`` gets the
same stopping rule (delta 0.2, max_passes 5) with its batched DeepFool step, and its
``batch_size=1`` path (the paper's sequential Algorithm 1) as a reference; ``uap_sgd``
runs its defaults (10 epochs of sign-SGD, batch 128). robustkit: median of REPEATS runs;
ART: one run per model (minutes), seeded through Python's and NumPy's global RNGs, which
is where ART draws its visiting order from.

ART runs on the digits MLP and CNN only (on MNIST a run would take tens of minutes). Its UAP needs an ART classifier: for scikit-learn's SVC
(``ScikitlearnSVC``) ``predict`` returns one-hot labels, not margins, so the inner
DeepFool's |f_k - f_y| / ||w_k - w_y|| step has no decision values to work with, and its
multi-class class gradients are Python loops over support vectors (see svm_grad); ART has
no Gaussian-mixture classifier (``GaussianNB`` has no gradients). Wrapping robustkit's
differentiable SVM/GMM modules in ART's PyTorchClassifier would run, but that measures
robustkit's models, not ART; those rows say so instead of carrying numbers.
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from attacks_common import Data, art_classifier, fooling_rate, median_times, peer, timed, trained

from robustkit.attacks.universal import uap, uap_sgd

XI, DELTA, PASSES = 0.3, 0.2, 5
REPEATS = 3
FAMILIES = ("mlp", "cnn", "svm", "gmm")
ART_FAMILIES = ("mlp", "cnn")
ART_DATASETS = ("digits",)
SEQUENTIAL = ("mlp", "cnn")  # where the batch_size=1 reference path runs (slow)
N_FIT = {"digits": None, "mnist": 2000}  # fitting images (None: the whole train split)
ART_NOTE = ("not run: ART's UAP attacks ART classifiers; ScikitlearnSVC.predict gives one-hot "
            "labels (no margins for DeepFool) and ART has no GMM classifier with gradients")
ART_SLOW = ("not run on MNIST: one sample at a time, a run takes minutes on digits already "
            "(see the digits rows)")


def run(data: Data, device: torch.device, base: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (model, method): seconds, fooling rates, passes, ratio to ART."""
    n_fit = N_FIT[data.name] or len(data.train.y)
    xf, yf = data.train.x[:n_fit].to(device), data.train.y[:n_fit].to(device)
    xv = data.test.x.to(device)
    rows = []
    for family in FAMILIES:
        model = trained(data, family).to(device)
        results = _ours(model, xf, yf, sequential=family in SEQUENTIAL and data.name == "digits")
        if family not in ART_FAMILIES:
            results["art"] = {"note": ART_NOTE}
        elif data.name not in ART_DATASETS:
            results["art"] = {"note": ART_SLOW}
        elif peer("art") is not None:
            results["art"] = _art(model, xf, data.train.info.n_classes)
        art_s = results.get("art", {}).get("seconds")
        for name, out in results.items():
            row = {**base, "benchmark": "uap", "dataset": data.name, "model": family,
                   "method": name, "xi": XI, "n_fit": len(xf), "n_val": len(xv)}
            v = out.pop("v", None)
            if v is not None:
                out = {**out, "seconds": round(out["seconds"], 3), "passes": out.get("passes"),
                       "fooling_rate_val": fooling_rate(model, xv, v),
                       "fooling_rate_fit": fooling_rate(model, xf, v),
                       "linf": round(float(torch.as_tensor(v).abs().max()), 4),
                       "art_seconds_over_these": None if art_s is None
                       else round(art_s / out["seconds"], 1)}
            rows.append({**row, **out})
            print(rows[-1], flush=True)
    return rows


def _ours(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, sequential: bool
          ) -> dict[str, dict[str, Any]]:
    """robustkit's fits: {method: {v, seconds, passes}}."""
    fits = {"robustkit uap": lambda: uap(model, x, y, xi=XI, norm="linf", delta=DELTA,
                                         max_passes=PASSES, seed=0),
            "robustkit uap_sgd": lambda: uap_sgd(model, x, y, xi=XI, norm="linf", seed=0)}
    times = median_times(fits, repeats=REPEATS, warmup=1)
    out = {}
    for name, fn in fits.items():
        res = fn()
        out[name] = {"v": res.v, "seconds": times[name], "passes": res.passes}
    if sequential:
        res, sec = timed(lambda: uap(model, x, y, xi=XI, norm="linf", delta=DELTA,
                                     max_passes=PASSES, batch_size=1, seed=0))
        out["robustkit uap (batch_size=1)"] = {"v": res.v, "seconds": sec,
                                               "passes": res.passes}
    return out


def _art(model: torch.nn.Module, x: torch.Tensor, n_classes: int) -> dict[str, Any]:
    """One ART UniversalPerturbation run: {v, seconds, converged, art_fooling_rate}."""
    from art.attacks.evasion import UniversalPerturbation

    attack = UniversalPerturbation(art_classifier(model, x, n_classes), attacker="deepfool",
                                   attacker_params={"verbose": False}, delta=DELTA,
                                   max_iter=PASSES, eps=XI, norm=np.inf, verbose=False)
    random.seed(0)
    np.random.seed(0)
    xn = x.cpu().numpy()
    _, sec = timed(lambda: attack.generate(xn))
    return {"v": torch.from_numpy(np.asarray(attack.noise)[0]).to(x), "seconds": sec,
            "converged": attack.converged,
            "art_fooling_rate": round(float(attack.fooling_rate), 4)}
