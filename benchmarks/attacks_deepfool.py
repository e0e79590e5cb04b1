"""Batched DeepFool (L2) vs foolbox L2DeepFoolAttack, ART DeepFool and torchattacks DeepFool.

Same model, samples and settings for all: 50 iterations, overshoot 0.02, 10 candidate
classes (torchattacks has no candidates parameter: it uses all classes). Every method's
x_adv is scored the same way (``attacks_common.minimal_scores``): on the clean-correct
samples, the share whose label flips and the median L2 norm of those perturbations.
robustkit runs with its default boundary refinement (``refine=3``) and without it
(``refine=0``, the plain algorithm). robustkit and foolbox: median time of REPEATS
interleaved runs; ART and torchattacks (seconds to minutes): one run each.
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from typing import Any

import torch
from attacks_common import (
    Data,
    art_classifier,
    median_times,
    minimal_scores,
    peer,
    timed,
    trained,
)

from robustkit.attacks.deepfool import deepfool

STEPS, OVERSHOOT, CANDIDATES = 50, 0.02, 10
REPEATS = {"digits": 5, "mnist": 3}
FAMILIES = ("mlp", "cnn", "svm", "gmm")
# ART and torchattacks take minutes per run; on MNIST their SVM/GMM runs (10 class
# gradients per step through a 10,000-sample kernel or 10 class mixtures) are left out.
SLOW_PEERS = {"digits": FAMILIES, "mnist": ("mlp", "cnn")}
N = {"digits": None, "mnist": 1000}  # test images attacked (None: the whole split)


def run(data: Data, device: torch.device, base: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (model, method)."""
    n = N[data.name] or len(data.test.y)
    x, y = data.test.x[:n].to(device), data.test.y[:n].to(device)
    rows = []
    for family in FAMILIES:
        model = trained(data, family).to(device)
        fast, slow = methods(model, x, y, data.test.info.n_classes)
        skipped = [] if family in SLOW_PEERS[data.name] else sorted(slow)
        slow = {k: v for k, v in slow.items() if k not in skipped}
        for fn in (*fast.values(), *slow.values()):  # warm up on a few samples
            fn(slice(0, 8))
        times = median_times({k: (lambda f=f: f(slice(None))) for k, f in fast.items()},
                             repeats=REPEATS[data.name], warmup=0)
        outs = {k: f(slice(None)) for k, f in fast.items()}
        for k, f in slow.items():
            outs[k], times[k] = timed(lambda f=f: f(slice(None)))
        ref = times.get("foolbox")
        for name, x_adv in outs.items():
            rows.append({**base, "benchmark": "deepfool", "dataset": data.name,
                         "model": family, "method": name, "n": len(x),
                         "seconds": round(times[name], 4),
                         "vs_foolbox": None if ref is None else round(times[name] / ref, 3),
                         **minimal_scores(model, x, y, x_adv)})
            print(rows[-1], flush=True)
        rows += [{**base, "benchmark": "deepfool", "dataset": data.name, "model": family,
                  "method": k, "n": len(x),
                  "note": f"not run on {data.name} {family}: minutes per run (see SLOW_PEERS)"}
                 for k in skipped]
    return rows


def methods(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, n_classes: int
            ) -> tuple[dict[str, Callable[[slice], Any]], dict[str, Callable[[slice], Any]]]:
    """(fast, slow) attack calls over a slice of (x, y), each returning x_adv."""

    def ours(refine: int) -> Callable[[slice], Any]:
        return lambda s: deepfool(model, x[s], y[s], norm="l2", overshoot=OVERSHOOT,
                                  max_iter=STEPS, candidates=CANDIDATES, refine=refine).x_adv

    fast: dict[str, Callable[[slice], Any]] = {"robustkit": ours(3),
                                               "robustkit (refine=0)": ours(0)}
    slow: dict[str, Callable[[slice], Any]] = {}
    if (fb := peer("foolbox")) is not None:
        fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=x.device)
        fb_atk = fb.attacks.L2DeepFoolAttack(steps=STEPS, candidates=CANDIDATES,
                                             overshoot=OVERSHOOT)
        fast["foolbox"] = lambda s: fb_atk(fmodel, x[s], y[s], epsilons=None)[0]
    if peer("art") is not None:
        from art.attacks.evasion import DeepFool

        art_atk = DeepFool(art_classifier(model, x, n_classes), max_iter=STEPS,
                           epsilon=OVERSHOOT, nb_grads=CANDIDATES, batch_size=len(x),
                           verbose=False)
        xn = x.cpu().numpy()
        slow["art"] = lambda s: art_atk.generate(xn[s])
    if (ta := peer("torchattacks")) is not None:
        with contextlib.redirect_stdout(io.StringIO()):  # "Failed to set device" (SVM/GMM)
            ta_atk = ta.DeepFool(model, steps=STEPS, overshoot=OVERSHOOT)
        ta_atk.set_device(x.device)
        slow["torchattacks"] = lambda s: ta_atk(x[s], y[s])
    return fast, slow
