"""The methods the AutoAttack benchmark runs: robustkit's (both AutoAttack versions, APGD-CE,
PGD), the reference chain from torchattacks (per seed), ART's AutoAttack, and the 5-eps
curve. Each returns (x_adv, fab status[, extra columns])."""
from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from typing import Any

import torch
from attacks_common import art_classifier, peer, predict

from robustkit.attacks.apgd import apgd
from robustkit.attacks.autoattack import autoattack, autoattack_curve
from robustkit.attacks.pgd import pgd

AA, LEAN = "robustkit autoattack", "robustkit autoattack lean"
REF = "reference chain (torchattacks)"
REF_SEEDS = (0, 1, 2)  # Square's draws move the reference by a few samples


def ref_name(seed: int) -> str:
    """The reference chain's method name for ``seed`` (seed 0 keeps the historic name)."""
    return REF if seed == 0 else f"{REF} seed {seed}"


def ours(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float
         ) -> dict[str, Callable[[], tuple[Any, ...]]]:
    """robustkit's methods: each returns (x_adv, fab status, extra columns)."""
    def chain(version: str) -> tuple[Any, ...]:
        res = autoattack(model, x, y, eps=eps, version=version)
        fab = "absent: fab_t skipped" if "fab_t" in res.info["skipped"] else "run"
        extra = {"version": version, "broken_by": json.dumps(res.info["counts"])}
        if "triggers" in res.info:
            extra["triggers"] = json.dumps(res.info["triggers"])
        return res.x_adv, fab, extra

    return {
        AA: lambda: chain("standard"),
        LEAN: lambda: chain("lean"),
        "robustkit apgd-ce": lambda: (apgd(model, x, y, eps=eps).x_adv, ""),
        "robustkit pgd-ce 50x10": lambda: (pgd(model, x, y, eps=eps, steps=50, restarts=10,
                                               loss="ce").x_adv, ""),
        "robustkit pgd-margin 50x10": lambda: (pgd(model, x, y, eps=eps, steps=50,
                                                   restarts=10, loss="margin").x_adv, ""),
    }


def reference_chain(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                    n_classes: int, seed: int = 0) -> tuple[Any, ...] | None:
    """AutoAttack's standard chain assembled from torchattacks, each attack on the points
    the earlier ones left robust (None without torchattacks); APGD-T and FAB-T on 9 targets
    at most, APGD-T left out below 4 classes (its loss is undefined there)."""
    ta = peer("torchattacks")
    if ta is None:
        return None
    with contextlib.redirect_stdout(io.StringIO()):  # "Failed to set device" (SVM/GMM)
        attacks = [ta.APGD(model, eps=eps, steps=100, loss="ce", seed=seed),
                   ta.APGDT(model, eps=eps, steps=100, n_classes=n_classes, seed=seed),
                   ta.FAB(model, eps=eps, steps=100, multi_targeted=True,
                          n_classes=n_classes, seed=seed),
                   ta.Square(model, eps=eps, n_queries=5000, seed=seed)]
    for atk in attacks[1:3]:  # AutoAttack's 9 targets (torchattacks takes n_classes - 1)
        atk.n_target_classes = min(9, n_classes - 1)
    if n_classes < 4:  # targeted DLR needs 4 classes: AutoAttack cannot run APGD-T there
        del attacks[1]
    x_adv = x.clone()
    robust = predict(model, x) == y
    flat = x.dim() == 2  # torchattacks takes images: rows go in as (N, 1, 1, D)
    for atk in attacks:
        atk.set_device(x.device)
        rows = robust.nonzero().squeeze(1)
        if not len(rows):
            break
        if flat:
            atk.model = _Flat(model)
            out = atk(x[rows][:, None, None, :], y[rows]).detach().reshape(len(rows), -1)
        else:
            out = atk(x[rows], y[rows]).detach()
        # as AutoAttack does: a point counts only inside the ball (FAB is minimal-norm)
        inside = (out - x[rows]).flatten(1).abs().amax(1) <= eps + 1e-6
        out = (x[rows] + (out - x[rows]).clamp(-eps, eps)).clamp(0, 1)
        hit = (predict(model, out) != y[rows]) & inside
        x_adv[rows[hit]], robust[rows[hit]] = out[hit], False
    return x_adv, "run", {"version": "reference", "seed": seed}


class _Flat(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.flatten(1))


def curve_grid(grid: list[float]) -> list[float]:
    """5 eps up to the largest of ``grid``, every eps of ``grid`` among them (the gaps are
    filled by halving the widest one), so that the curve can be checked against the
    single-eps runs."""
    if len(set(grid)) == 1:
        return [round(grid[0] * k / 5, 6) for k in range(1, 6)]
    out = sorted(set(grid) | {0.0})
    while len(out) < 6:  # the widest gap, the smallest eps first among equal ones
        i = max(range(len(out) - 1), key=lambda j: (round(out[j + 1] - out[j], 6), -j))
        out.insert(i + 1, round((out[i] + out[i + 1]) / 2, 6))
    return out[1:6] if len(out) == 6 else out[-5:]


def curve(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, grid: list[float],
          version: str = "standard") -> tuple[Any, ...]:
    """The 5-eps curve in one call: x_adv at its largest eps, and the robust accuracy at
    each eps (JSON) in the ``curve`` column."""
    res = autoattack_curve(model, x, y, eps=grid, version=version)
    acc = {f"{e:g}": round(float((r.pred == y).double().mean()), 4) for e, r in zip(grid, res)}
    return res[-1].x_adv, "run", {"curve": json.dumps(acc), "version": version}


def art_autoattack(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                   n_classes: int) -> tuple[Any, ...] | None:
    """ART's AutoAttack with its default attack list (None without ART)."""
    if peer("art") is None:
        return None
    from art.attacks.evasion import AutoAttack

    atk = AutoAttack(art_classifier(model, x, n_classes), eps=eps, batch_size=len(x))
    with contextlib.redirect_stdout(io.StringIO()):
        out = atk.generate(x.numpy(), y=y.numpy())
    return torch.as_tensor(out, dtype=x.dtype), "deepfool instead"
