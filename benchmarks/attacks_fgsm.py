"""FGSM cost relative to the floor: one forward + backward pass of the same batch.

The floor is ``torch.autograd.grad(cross_entropy(model(x), y, reduction="sum"), x)``:
what any FGSM has to compute (robustkit's loss; "mean" measured the same cost). Each
method's median time per call is divided by the floor's median measured in the same loop.
Every peer row also compares robustkit with that peer round by round
(``attacks_common.paired``): the median of the per-round ratios robustkit / peer with its
95% interval, and the share of rounds robustkit won, once in the loop of all methods and
once in a loop of robustkit and that peer alone (``alone_*`` columns): at the 1-2% level
the result depends on what else runs between the calls. robustkit runs with ``predict=False``
(no forward pass on x_adv, the ratio the target is about) and with ``predict=True`` (an
extra forward for ``success``; foolbox always does this one, to return its success flags).

robustkit's FGSM back-propagates its logit direction in closed form (``ce_logit_direction``:
the exact gradient's direction where float32 cross-entropy saturates, see
attacks_saturation.py) instead of going through torch's log_softmax, which on CPU is a slow
per-row path for 10 classes: it can go below the floor. The ``floor (model only)`` row is the part
no FGSM can avoid: forward, then backward from a given logit gradient, no loss at all.
"""
from __future__ import annotations

import contextlib
import io
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from attacks_common import FAMILIES, Data, art_classifier, paired, peer, sample_times, trained

from robustkit.attacks.fgsm import fgsm

EPS = {"digits": 0.1, "mnist": 0.3}
PEERS = ("torchattacks", "foolbox", "art")
REPEATS = {"digits": 400, "mnist": 80}


def run(data: Data, device: torch.device, base: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (model, method) on ``data``'s test split."""
    x, y = data.test.x.to(device), data.test.y.to(device)
    eps, rows = EPS[data.name], []
    for family in FAMILIES:
        model = trained(data, family).to(device)
        fns = methods(model, x, y, eps, data.test.info.n_classes)
        samples = sample_times(fns, repeats=REPEATS[data.name])
        times = {k: statistics.median(v) for k, v in samples.items()}
        ours = fgsm(model, x, y, eps=eps, predict=False).x_adv
        for name, fn in fns.items():
            out = None if name.startswith("floor") else fn()
            row = {**base, "benchmark": "fgsm", "dataset": data.name, "model": family,
                   "method": name, "n": len(x), "eps": eps,
                   "seconds": round(times[name], 6),
                   "ratio": round(times[name] / times["floor"], 3),
                   "agree": None if out is None else _agree(out, ours)}
            if name in PEERS:
                p = paired(samples["robustkit"], samples[name])
                alone = sample_times({"robustkit": fns["robustkit"], name: fn},
                                     repeats=REPEATS[data.name])
                q = paired(alone["robustkit"], alone[name])
                row |= {"robustkit_over_this": round(p["median"], 3),
                        "ci_low": round(p["low"], 3), "ci_high": round(p["high"], 3),
                        "robustkit_faster_share": round(p["faster_share"], 3),
                        "alone_robustkit_over_this": round(q["median"], 3),
                        "alone_ci_low": round(q["low"], 3), "alone_ci_high": round(q["high"], 3)}
            rows.append(row)
            print(rows[-1], flush=True)
    return rows


def methods(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
            n_classes: int) -> dict[str, Callable[[], Any]]:
    """The floor, robustkit's FGSM and each installed peer's, as zero-argument calls."""

    def floor() -> torch.Tensor:
        xg = x.detach().requires_grad_(True)
        return torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)[0]

    with torch.no_grad():
        g_logits = torch.randn_like(model(x))

    def model_only() -> torch.Tensor:
        xg = x.detach().requires_grad_(True)
        return torch.autograd.grad(model(xg), xg, g_logits)[0]

    fns: dict[str, Callable[[], Any]] = {
        "floor": floor,
        "floor (model only)": model_only,
        "robustkit": lambda: fgsm(model, x, y, eps=eps, predict=False).x_adv,
        "robustkit (predict=True)": lambda: fgsm(model, x, y, eps=eps).x_adv,
    }
    if (atk := torchattacks_fgsm(model, eps, x.device)) is not None:
        fns["torchattacks"] = lambda: atk(x, y)
    if (fb := peer("foolbox")) is not None:
        fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=x.device)
        fb_atk = fb.attacks.LinfFastGradientAttack(random_start=False)
        fns["foolbox"] = lambda: fb_atk(fmodel, x, y, epsilons=eps)[1]
    if peer("art") is not None:
        from art.attacks.evasion import FastGradientMethod

        art_atk = FastGradientMethod(art_classifier(model, x, n_classes), norm=np.inf, eps=eps,
                                     batch_size=len(x))
        xn, yn = x.cpu().numpy(), y.cpu().numpy()
        fns["art"] = lambda: art_atk.generate(xn, y=yn)
    return fns


def torchattacks_fgsm(model: torch.nn.Module, eps: float, device: torch.device) -> Any | None:
    """torchattacks' FGSM on ``model`` (None when torchattacks is not installed)."""
    if (ta := peer("torchattacks")) is None:
        return None
    with contextlib.redirect_stdout(io.StringIO()):  # "Failed to set device" for
        atk = ta.FGSM(model, eps=eps)                # buffer-only modules: set below
    atk.set_device(device)
    return atk


def _agree(out: Any, ours: torch.Tensor) -> float:
    """Share of x_adv entries equal (to 1e-6) to robustkit's: sign(0) and float-rounded
    near-zero gradients are where FGSMs may differ."""
    out = torch.as_tensor(out, device=ours.device, dtype=ours.dtype).reshape(ours.shape)
    return round(float(((out - ours).abs() <= 1e-6).double().mean()), 6)
