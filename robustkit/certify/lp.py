"""The LP relaxation of the MILP as a certificate (method "lp"): sound, not complete.

Same flow as "milp" (:func:`robustkit.certify.programs.run_programs`: bounds, then PGD,
then one program per open sample), but the program is the triangle relaxation
(:mod:`robustkit.certify.lp_bounds`): a pair is safe when its LP minimum clears the
rounding allowance; a sample is certified when every open pair is. A negative LP minimum
decides nothing unless the LP's own input point is adversarial on the model (checked).
With ``bounds="lp"`` the hidden bounds are LP-tightened first ("LP-ALL" in Salman et
al. 2019), else the relaxation uses CROWN's (or IBP's) pre-activation bounds. It shows
how much of the MILP's certified accuracy a convex relaxation keeps: given the same
bounds, CROWN <= LP <= MILP margin by margin.

Reference: Salman, Yang, Zhang, Hsieh & Zhang, "A Convex Relaxation Barrier to Tight
Robustness Verification of Neural Networks", NeurIPS 2019 (arXiv:1902.08722).
"""
from __future__ import annotations

import time

import torch
from torch import nn

from robustkit.certify.base import CertifyResult, register
from robustkit.certify.lp_bounds import minimize, open_lp
from robustkit.certify.milp import applies_linf
from robustkit.certify.milp_model import build
from robustkit.certify.programs import (
    Open,
    open_pairs,
    pair_spec,
    program_bounds,
    run_programs,
    witness,
)

Tensor = torch.Tensor


@register("lp", applies=applies_linf, priority=35)
def lp(model: nn.Module, x: Tensor, y: Tensor, *, eps: tuple[float, ...], norm: str,
       time_limit: float, bounds: str = "crown", attack_steps: int = 20,
       chunk: int = 64) -> list[CertifyResult]:
    """LP (triangle) relaxation bounds of the margins of a ReLU network in Linf.

    Args:
        model: a model :mod:`robustkit.certify.layers` reads.
        x: (N, ...) inputs in [0, 1]; y: int64 (N,) labels.
        eps: radii, one result each. norm: ``"linf"``.
        time_limit: CPU seconds per sample and eps; past it the sample is ``unknown``.
        bounds: hidden pre-activation bounds the relaxation takes: ``"crown"`` (CROWN
            intersected with IBP), ``"ibp"``, or ``"lp"`` (LP-tightened, "LP-ALL").
        attack_steps: PGD steps tried before any solve (0: none).
        chunk: samples per bound batch.

    Returns:
        One ``CertifyResult`` per eps; ``info`` as for "milp" (``decided_by`` says "lp"
        where the LP decided).

    Example:
        >>> from robustkit import load_dataset, models
        >>> from robustkit.certify import certify
        >>> model, _ = models.train("mlp", "digits", hidden=[32], epochs=5, device="cpu")
        >>> x, y, _ = load_dataset("digits", "test", limit=20)
        >>> lp = certify(model, x, y, eps=0.01, method="lp", bounds="lp")
        >>> crown = certify(model, x, y, eps=0.01, method="crown")
        >>> bool((lp.certified >= crown.certified).all())
        True
    """
    return run_programs(model, x, y, eps=eps, method="lp", bounds=bounds,
                        time_limit=time_limit, attack_steps=attack_steps, chunk=chunk,
                        decide=_decide)


def _decide(model: nn.Module, layers: list, s: Open, time_limit: float
            ) -> tuple[str, Tensor | None, float]:
    """("certified" | "broken" | a reason, witness, CPU seconds) for one sample."""
    start = time.process_time()
    timeout = f"time limit ({time_limit:g} s) reached"
    lo, hi, hidden = program_bounds(layers, s, start + time_limit)
    if hidden is None:
        return timeout, None, time.process_time() - start
    prog = build(layers, hidden, lo, hi, relaxed=True)
    h = open_lp(prog)
    k = len(prog.b_out)
    for j in open_pairs(s, k):
        left = time_limit - (time.process_time() - start)
        if left <= 0:
            return timeout, None, time.process_time() - start
        spec = pair_spec(s, j, k)
        out = minimize(h, prog, spec @ prog.w_out, float(spec @ prog.b_out), left)
        if out.status == "timeout":
            return timeout, None, time.process_time() - start
        if out.status.startswith("unsolved"):
            return f"LP for class {j} {out.status}", None, time.process_time() - start
        if out.status == "infeasible" or out.value > s.tol:
            continue
        point = witness(model, s, out.x, lo, hi) if out.x is not None else None
        if point is not None:
            return "broken", point, time.process_time() - start
        return (f"LP relaxation: margin to class {j} bounded by {out.value:.4g}, not above "
                f"the allowance"), None, time.process_time() - start
    return "certified", None, time.process_time() - start
