"""What the program-based certificates ("milp", "lp") share: reading the network, the
per-eps flow, and the pre-activation bounds their programs take.

Per eps, for all samples at once: CROWN (or IBP) bounds the hidden pre-activations and
the margins; samples whose every margin bound clears the rounding allowance are
certified there, PGD tries the rest (verified points: broken). Each sample still open is
handed to the method's ``decide`` (one program per sample, solved per class pair whose
margin bound did not clear), which returns certified, broken with a point, or a reason.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from robustkit.certify.base import CertifyResult, undecided, verify_witness
from robustkit.certify.bounds import allowance, attack_witness, input_box, result
from robustkit.certify.crown_bounds import margin_bounds, preactivation_bounds, unstable_counts
from robustkit.certify.dense import network
from robustkit.certify.layers import Unsupported, ops_of
from robustkit.certify.lp_bounds import tighten

Tensor = torch.Tensor
BOUNDS = ("crown", "ibp", "lp")


@dataclass(frozen=True)
class Open:
    """One sample left to a program: the sample (x, y batches of one), its flat float64
    input ``x0``, the hidden pre-activation bounds [(l, u)] (n_k,), the bound pass's margin
    lower bounds (K-1,) and which pairs they already prove safe, the label, the rounding
    allowance, the eps and the bounds' source (see :func:`run_programs`)."""

    x: Tensor
    y: Tensor
    x0: Tensor
    hidden: list[tuple[Tensor, Tensor]]
    margin: Tensor
    safe_pair: Tensor
    label: int
    tol: float
    eps: float
    bounds: str


# decide(model, layers, sample, time_limit) -> ("certified" | "broken" | a reason, point, seconds)
Decide = Callable[[nn.Module, list, Open, float], tuple[str, "Tensor | None", float]]


def run_programs(model: nn.Module, x: Tensor, y: Tensor, *, eps: tuple[float, ...],
                 method: str, bounds: str, time_limit: float, attack_steps: int, chunk: int,
                 decide: Decide) -> list[CertifyResult]:
    """The shared flow of "milp" and "lp" (see the module docstring), one result per eps.

    ``bounds`` is the source of the hidden pre-activation bounds of the bound pass:
    "crown" (intersected with IBP) or "ibp"; "lp" starts from CROWN's and leaves the
    tightening to ``decide``.
    """
    if bounds not in BOUNDS:
        raise ValueError(f"bounds={bounds!r} is not valid; valid: {', '.join(BOUNDS)}")
    start = time.perf_counter()
    try:
        layers = network(ops_of(model), tuple(x.shape[1:]))
    except Unsupported as exc:
        return [undecided(x, e, "linf", method, f"cannot read {exc}") for e in eps]
    with torch.no_grad():
        logits = model(x)
    correct = logits.argmax(1) == y
    x0, yc = x.detach().flatten(1).double().cpu(), y.cpu()
    tol = allowance(model, logits, len(layers),
                    max([x0.shape[1]] + [w.shape[0] for w, _ in layers])).cpu()
    setup = time.perf_counter() - start
    return [_at_eps(model, x, y, x0, yc, layers, correct, tol, e, method, bounds, time_limit,
                    attack_steps, chunk, setup if i == 0 else 0.0, decide)
            for i, e in enumerate(eps)]


def _at_eps(model: nn.Module, x: Tensor, y: Tensor, x0: Tensor, yc: Tensor, layers: list,
            correct: Tensor, tol: Tensor, e: float, method: str, bounds: str,
            time_limit: float, attack_steps: int, chunk: int, setup: float,
            decide: Decide) -> CertifyResult:
    t0 = time.perf_counter()
    hidden, margins = [], []
    with torch.no_grad():
        for i in range(0, len(x0), chunk):
            b = preactivation_bounds(layers, x0[i:i + chunk], e, "linf", crown=bounds != "ibp")
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
        sample = Open(x[i:i + 1], y[i:i + 1], x0[i],
                      [(lo[i % chunk], hi[i % chunk]) for lo, hi in b], margin[i],
                      safe_pair[i], int(yc[i]), float(tol[i]), e, bounds)
        verdict, point, spent = decide(model, layers, sample, time_limit)
        solve[i], seconds[i] = spent, seconds[i] + spent
        if verdict == "certified":
            certified[i], decided[i] = True, method
        elif verdict == "broken" and point is not None:
            broken[i], decided[i] = True, method
            x_adv[i] = point
        else:
            reasons[i] = verdict
    return result(eps=e, norm="linf", method=method, certified=certified, broken=broken,
                  x_adv=x_adv, x=x, correct=correct, seconds=seconds, reasons=reasons,
                  info={"margin": margin.amin(1), "unstable": unstable, "solve_seconds": solve,
                        "decided_by": tuple(decided), "bounds": bounds})


def open_pairs(sample: Open, k: int) -> list[int]:
    """The classes j whose pair (label, j) the bound pass left open, most threatened
    (lowest margin bound) first."""
    oth = [j for j in range(k) if j != sample.label]
    pairs = [(float(sample.margin[p]), oth[p]) for p in range(k - 1)
             if not bool(sample.safe_pair[p])]
    return [j for _, j in sorted(pairs)]


def program_bounds(layers: list, sample: Open, deadline: float
                   ) -> tuple[Tensor, Tensor, list[tuple[Tensor, Tensor]] | None]:
    """The input box [lo, hi] of a sample's program and the hidden bounds it takes: the
    bound pass's, LP-tightened when ``sample.bounds`` is "lp" (None when the CPU clock
    passes ``deadline`` meanwhile)."""
    lo, hi = input_box(sample.x0, sample.eps)
    if sample.bounds != "lp":
        return lo, hi, sample.hidden
    return lo, hi, tighten(layers, sample.hidden, lo, hi, deadline=deadline)


def pair_spec(sample: Open, j: int, k: int) -> np.ndarray:
    """The margin ``logit_label - logit_j`` as a vector over the K logits."""
    spec = np.zeros(k)
    spec[sample.label], spec[j] = 1.0, -1.0
    return spec


def witness(model: nn.Module, sample: Open, point: np.ndarray, lo: Tensor, hi: Tensor
            ) -> Tensor | None:
    """A program's input point, clipped to the box, as an input of the model's shape when
    it is adversarial on the model (checked in the model's own arithmetic); else None."""
    x_adv = torch.from_numpy(np.clip(point, lo.numpy(), hi.numpy())).to(sample.x.dtype)
    x_adv = x_adv.reshape(sample.x.shape).to(sample.x.device)
    ok = bool(verify_witness(model, sample.x, sample.y, x_adv, sample.eps, "linf")[0])
    return x_adv[0] if ok else None
