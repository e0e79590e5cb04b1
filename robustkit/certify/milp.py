"""Exact verification of ReLU networks by mixed-integer programming (method "milp").

Per eps, for all samples at once: CROWN (or IBP) bounds the hidden pre-activations and
the margins; samples whose every margin bound clears the rounding allowance are
certified there, PGD tries the rest (verified points: broken). Each sample still open gets
one program (:mod:`robustkit.certify.milp_model`, the bounds as big-M constants, stable
neurons eliminated), solved per class pair whose margin bound did not clear, most
threatened pair first, stopping at the first witness (checked on the model) or when
every pair is proven safe; ``time_limit`` seconds per sample, after which it is
``unknown`` (CPU seconds: a busy machine does not shrink the search). Linf only: an L2 ball is a quadratic constraint, outside a MILP.

Reference: Tjeng, Xiao & Tedrake, "Evaluating Robustness of Neural Networks with Mixed
Integer Programming", ICLR 2019 (arXiv:1711.07356).
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from robustkit.certify.base import CertifyResult, register, undecided, verify_witness
from robustkit.certify.bounds import allowance, attack_witness, input_box, result
from robustkit.certify.crown import (
    margin_bounds,
    preactivation_bounds,
    unstable_counts,
)
from robustkit.certify.dense import network
from robustkit.certify.layers import Unsupported, ops_of, reason
from robustkit.certify.milp_model import build, solve_pair

Tensor = torch.Tensor
BOUNDS = ("crown", "ibp")


def _applies(model: nn.Module, norm: str) -> str | None:
    if norm != "linf":
        return "MILP handles Linf balls only (an L2 ball is a quadratic constraint)"
    return reason(model)


@register("milp", applies=_applies, priority=30, exact=True)
def milp(model: nn.Module, x: Tensor, y: Tensor, *, eps: tuple[float, ...], norm: str,
         time_limit: float, bounds: str = "crown", attack_steps: int = 20,
         chunk: int = 64) -> list[CertifyResult]:
    """Exact verification of a ReLU network in Linf (complete up to ``time_limit``).

    Args:
        model: a model :mod:`robustkit.certify.layers` reads.
        x: (N, ...) inputs in [0, 1]; y: int64 (N,) labels.
        eps: radii, one result each. norm: ``"linf"``.
        time_limit: CPU seconds (of this process) of building and solving per sample
            and eps; an undecided sample is ``unknown``.
        bounds: ``"crown"`` (CROWN intersected with IBP) or ``"ibp"``: the pre-activation
            bounds that become big-M constants.
        attack_steps: PGD steps tried before any solve (0: none).
        chunk: samples per bound batch.

    Returns:
        One ``CertifyResult`` per eps. ``info``: ``margin`` (the bound's margin, N),
        ``unstable`` (unstable ReLUs, N), ``solve_seconds`` (N), ``decided_by`` (per
        sample: "bound", "attack", "milp", "misclassified" or "" when unknown).

    Example:
        >>> from robustkit import load_dataset, models
        >>> from robustkit.certify import certify
        >>> model, _ = models.train("mlp", "digits", hidden=[32], epochs=5, device="cpu")
        >>> x, y, _ = load_dataset("digits", "test", limit=20)
        >>> r = certify(model, x, y, eps=0.01, method="milp", time_limit=10)
        >>> r.decided_share > 0.9
        True
    """
    if bounds not in BOUNDS:
        raise ValueError(f"bounds={bounds!r} is not valid; valid: {', '.join(BOUNDS)}")
    start = time.perf_counter()
    try:
        layers = network(ops_of(model), tuple(x.shape[1:]))
    except Unsupported as exc:
        return [undecided(x, e, norm, "milp", f"cannot read {exc}") for e in eps]
    with torch.no_grad():
        logits = model(x)
    correct = logits.argmax(1) == y
    x0, yc = x.detach().flatten(1).double().cpu(), y.cpu()
    tol = allowance(model, logits, len(layers),
                    max([x0.shape[1]] + [w.shape[0] for w, _ in layers])).cpu()
    setup = time.perf_counter() - start
    return [_at_eps(model, x, y, x0, yc, layers, correct, tol, e, bounds, time_limit,
                    attack_steps, chunk, setup if i == 0 else 0.0)
            for i, e in enumerate(eps)]


def _at_eps(model: nn.Module, x: Tensor, y: Tensor, x0: Tensor, yc: Tensor, layers: list,
            correct: Tensor, tol: Tensor, e: float, bounds: str, time_limit: float,
            attack_steps: int, chunk: int, setup: float) -> CertifyResult:
    t0 = time.perf_counter()
    hidden, margins = [], []
    with torch.no_grad():
        for i in range(0, len(x0), chunk):
            b = preactivation_bounds(layers, x0[i:i + chunk], e, "linf", crown=bounds == "crown")
            hidden.append(b)
            margins.append(margin_bounds(layers, b, x0[i:i + chunk], yc[i:i + chunk], e, "linf"))
    margin = torch.cat(margins)
    safe_pair = margin > tol[:, None]
    certified = safe_pair.all(1).to(x.device) & correct
    broken, x_adv = attack_witness(model, x, y, e, "linf", correct & ~certified, attack_steps)
    n = len(x)
    shared = (time.perf_counter() - t0 + setup) / max(n, 1)
    seconds = torch.full((n,), shared, dtype=torch.float64)
    solve = torch.zeros(n, dtype=torch.float64)
    decided = ["misclassified" if not c else "bound" if s else "attack" if b else ""
               for c, s, b in zip(correct.tolist(), certified.tolist(), broken.tolist())]
    reasons = [""] * n
    unstable = torch.cat([unstable_counts(b) for b in hidden]) if layers[:-1] else \
        torch.zeros(n, dtype=torch.long)
    for i in [i for i in range(n) if decided[i] == ""]:
        b = hidden[i // chunk]
        mine = [(lo[i % chunk], hi[i % chunk]) for lo, hi in b]
        verdict, point, spent = _decide(model, x[i:i + 1], y[i:i + 1], layers, mine,
                                        x0[i], e, margin[i], safe_pair[i], int(yc[i]),
                                        float(tol[i]), time_limit)
        solve[i], seconds[i] = spent, seconds[i] + spent
        if verdict == "certified":
            certified[i], decided[i] = True, "milp"
        elif verdict == "broken" and point is not None:
            broken[i], decided[i] = True, "milp"
            x_adv[i] = point
        else:
            reasons[i] = verdict
    return result(eps=e, norm="linf", method="milp", certified=certified, broken=broken,
                  x_adv=x_adv, x=x, correct=correct, seconds=seconds, reasons=reasons,
                  info={"margin": margin.amin(1), "unstable": unstable, "solve_seconds": solve,
                        "decided_by": tuple(decided), "bounds": bounds})


def _decide(model: nn.Module, x: Tensor, y: Tensor, layers: list, hidden: list,
            x0: Tensor, e: float, margin: Tensor, safe_pair: Tensor, label: int, tol: float,
            time_limit: float) -> tuple[str, Tensor | None, float]:
    """("certified" | "broken" | a reason, witness, seconds) for one sample."""
    start = time.process_time()
    lo, hi = input_box(x0, e)
    prog = build(layers, hidden, lo, hi)
    k = layers[-1][0].shape[0]
    oth = [j for j in range(k) if j != label]
    open_pairs = [(float(margin[p]), oth[p]) for p in range(k - 1) if not bool(safe_pair[p])]
    why = ""
    for _, j in sorted(open_pairs):
        left = time_limit - (time.process_time() - start)
        if left <= 0:
            return f"time limit ({time_limit:g} s) reached", None, time.process_time() - start
        spec = np.zeros(k)
        spec[label], spec[j] = 1.0, -1.0
        out = solve_pair(prog, spec, tol, left)
        if out.verdict == "witness" and out.x is not None:
            point = torch.from_numpy(np.clip(out.x, lo.numpy(), hi.numpy())).to(x.dtype)
            point = point.reshape(x.shape).to(x.device)
            if bool(verify_witness(model, x, y, point, e, "linf")[0]):
                return "broken", point[0], time.process_time() - start
            why = f"MILP point for class {j} not adversarial on the model (rounding)"
        elif out.verdict == "open":
            why = f"class {j}: minimum margin within the rounding allowance"
        elif out.verdict == "timeout":
            return f"time limit ({time_limit:g} s) reached", None, time.process_time() - start
    return (why or "certified"), None, time.process_time() - start
