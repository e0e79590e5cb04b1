"""Exact verification of ReLU networks by mixed-integer programming (method "milp").

The flow is :func:`robustkit.certify.programs.run_programs`: bounds first (samples they
certify stop there), PGD next (verified points: broken), then one program per open sample
(:mod:`robustkit.certify.milp_model`, the bounds as big-M constants, stable neurons
eliminated), solved per class pair whose margin bound did not clear, most threatened pair
first, stopping at the first witness (checked on the model) or when every pair is proven
safe; ``time_limit`` seconds per sample, after which it is ``unknown`` (CPU seconds: a
busy machine does not shrink the search). Linf only: an L2 ball is a quadratic
constraint, outside a MILP.

Reference: Tjeng, Xiao & Tedrake, "Evaluating Robustness of Neural Networks with Mixed
Integer Programming", ICLR 2019 (arXiv:1711.07356).
"""
from __future__ import annotations

import time

import torch
from torch import nn

from robustkit.certify.base import CertifyResult, register
from robustkit.certify.layers import reason
from robustkit.certify.milp_model import build, solve_pair
from robustkit.certify.programs import (
    Open,
    open_pairs,
    pair_spec,
    program_bounds,
    run_programs,
    witness,
)

Tensor = torch.Tensor


def applies_linf(model: nn.Module, norm: str) -> str | None:
    """None for a network the dense chain reads, in Linf; else why not."""
    if norm != "linf":
        return "MILP and LP handle Linf balls only (an L2 ball is a quadratic constraint)"
    return reason(model)


@register("milp", applies=applies_linf, priority=30, exact=True)
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
        bounds: the pre-activation bounds that become big-M constants: ``"crown"``
            (CROWN intersected with IBP), ``"ibp"``, or ``"lp"`` (CROWN's, then each
            unstable neuron's tightened by two LPs over the relaxation of the layers
            before it, per open sample: fewer binaries, more seconds before the solve).
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
    return run_programs(model, x, y, eps=eps, method="milp", bounds=bounds,
                        time_limit=time_limit, attack_steps=attack_steps, chunk=chunk,
                        decide=_decide)


def _decide(model: nn.Module, layers: list, s: Open, time_limit: float
            ) -> tuple[str, Tensor | None, float]:
    """("certified" | "broken" | a reason, witness, CPU seconds) for one sample."""
    start = time.process_time()
    lo, hi, hidden = program_bounds(layers, s, start + time_limit)
    if hidden is None:
        return f"time limit ({time_limit:g} s) reached", None, time.process_time() - start
    prog = build(layers, hidden, lo, hi)
    k = layers[-1][0].shape[0]
    why = ""
    for j in open_pairs(s, k):
        left = time_limit - (time.process_time() - start)
        if left <= 0:
            return f"time limit ({time_limit:g} s) reached", None, time.process_time() - start
        out = solve_pair(prog, pair_spec(s, j, k), s.tol, left)
        if out.verdict == "witness" and out.x is not None:
            point = witness(model, s, out.x, lo, hi)
            if point is not None:
                return "broken", point, time.process_time() - start
            why = f"MILP point for class {j} not adversarial on the model (rounding)"
        elif out.verdict == "open":
            why = f"class {j}: minimum margin within the rounding allowance"
        elif out.verdict == "timeout":
            return f"time limit ({time_limit:g} s) reached", None, time.process_time() - start
    return (why or "certified"), None, time.process_time() - start
