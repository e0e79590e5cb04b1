"""Linear programs over the triangle relaxation of a ReLU network around one input.

The program is the MILP of :mod:`robustkit.certify.milp_model` with every binary relaxed
to [0, 1] (``build(..., relaxed=True)``): each unstable ReLU with pre-activation bounds
``l < 0 < u`` becomes the triangle ``a >= 0, a >= z, a <= u (z - l) / (u - l)``, the
tightest convex set of that one neuron given its bounds (Ehlers 2017; Wong & Kolter 2018).
Two uses:

- :func:`minimize`: the LP minimum of one margin; above the rounding allowance, no input
  in the box has a smaller margin (the LP's set contains the network's graph).
- :func:`tighten`: the pre-activation bounds of each hidden layer after the first (the
  first is exact over a box), recomputed neuron by neuron as the LP minimum and maximum
  over the relaxation of the layers before it, with the layers' tightened bounds: the
  "LP-ALL" bounds of Salman et al. 2019. Only the neurons still unstable are solved (a
  stable neuron's bounds do not change the relaxation's shape). Each solve warm-starts
  from the last basis of one HiGHS instance per layer.

HiGHS's simplex decides up to its tolerances (1e-7): a tightened bound is moved outward
by ``1e-6 (1 + |value|)`` before use, and a margin must clear the caller's allowance.

Reference: Salman, Yang, Zhang, Hsieh & Zhang, "A Convex Relaxation Barrier to Tight
Robustness Verification of Neural Networks", NeurIPS 2019 (arXiv:1902.08722).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from robustkit.certify.milp_model import Program, build, quiet_highs, run_single_threaded

Tensor = torch.Tensor
SLACK = 1e-6


@dataclass(frozen=True)
class LPOutcome:
    """An LP solve: ``status`` "optimal", "infeasible", "timeout" or "unsolved (HiGHS's
    status)"; the minimum (NaN unless optimal) and the input point where it is attained
    (None unless optimal)."""

    status: str
    value: float
    x: np.ndarray | None


def open_lp(prog: Program) -> object:
    """A silent HiGHS instance holding ``prog`` (solve it with :func:`minimize`, one
    thread)."""
    h = quiet_highs()
    h.passModel(prog.lp)  # type: ignore[attr-defined]
    return h


def minimize(h: object, prog: Program, row: np.ndarray, offset: float,
             time_limit: float) -> LPOutcome:
    """Minimize ``row . a_last + offset`` (row over the last hidden layer's neurons,
    (n_{L-1},)) over the program in ``h``, warm-started from its last basis; ``time_limit``
    is in CPU seconds, of which HiGHS's wall-clock limit is a generous multiple."""
    import highspy

    cost = np.zeros(prog.lp.num_col_)  # type: ignore[attr-defined]
    cost[prog.last_cols] = row[prog.last_pos]
    h.changeColsCost(len(cost), np.arange(len(cost), dtype=np.int32), cost)  # type: ignore
    h.changeObjectiveOffset(float(offset))  # type: ignore[attr-defined]
    # HiGHS's limit is wall time: twenty times the CPU seconds left, a backstop only (a
    # loaded machine stretches wall time several-fold); callers check the CPU clock.
    h.setOptionValue("time_limit", max(20 * float(time_limit), 0.2))  # type: ignore
    run_single_threaded(h)
    status = h.getModelStatus()  # type: ignore[attr-defined]
    if status == highspy.HighsModelStatus.kOptimal:
        value = float(h.getInfo().objective_function_value)  # type: ignore[attr-defined]
        x = np.array(h.getSolution().col_value)[prog.x_cols]  # type: ignore[attr-defined]
        return LPOutcome("optimal", value, x)
    if status == highspy.HighsModelStatus.kInfeasible:
        return LPOutcome("infeasible", float("inf"), None)
    if status == highspy.HighsModelStatus.kTimeLimit:
        return LPOutcome("timeout", float("nan"), None)
    return LPOutcome(f"unsolved ({h.modelStatusToString(status)})",  # type: ignore[attr-defined]
                     float("nan"), None)


def pair_minima(layers: list[tuple[Tensor, Tensor]], hidden: list[tuple[Tensor, Tensor]],
                lo: Tensor, hi: Tensor, label: int) -> np.ndarray:
    """The LP minimum of every margin ``logit_label - logit_j`` (K-1,), j != label in
    order, given the hidden pre-activation bounds (n_k,) and the input box [lo, hi]."""
    prog = build(layers, hidden, lo, hi, relaxed=True)
    h = open_lp(prog)
    k = len(prog.b_out)
    out = []
    for j in (j for j in range(k) if j != label):
        spec = np.zeros(k)
        spec[label], spec[j] = 1.0, -1.0
        out.append(minimize(h, prog, spec @ prog.w_out, float(spec @ prog.b_out), 60.0).value)
    return np.array(out)


def tighten(layers: list[tuple[Tensor, Tensor]], hidden: list[tuple[Tensor, Tensor]],
            lo: Tensor, hi: Tensor, *, deadline: float) -> list[tuple[Tensor, Tensor]] | None:
    """LP-tightened hidden pre-activation bounds (the module docstring), each inside the
    given ones; None when the process's CPU clock passes ``deadline`` first."""
    out = [hidden[0]] if hidden else []
    for k in range(1, len(hidden)):
        l_k, u_k = hidden[k][0].clone(), hidden[k][1].clone()
        unstable = ((l_k < 0) & (u_k > 0)).nonzero().flatten().tolist()
        if unstable:
            prog = build(layers[:k + 1], out, lo, hi, relaxed=True)
            h = open_lp(prog)
            w, b = prog.w_out, prog.b_out
            for i in unstable:
                for sign in (1.0, -1.0):  # minimize z_i, then minimize -z_i
                    left = deadline - time.process_time()
                    if left <= 0:
                        return None
                    r = minimize(h, prog, sign * w[i], sign * float(b[i]), left)
                    if r.status == "timeout":
                        return None
                    if r.status != "optimal":
                        continue  # keep the given bound (sound)
                    v = sign * (r.value - SLACK * (1 + abs(r.value)))
                    if sign > 0:
                        l_k[i] = max(float(l_k[i]), v)
                    else:
                        u_k[i] = min(float(u_k[i]), v)
        out.append((l_k, u_k))
    return out
