"""The mixed-integer program of a ReLU network around one input (Tjeng, Xiao & Tedrake
2019), built as a HiGHS model, and its solve per class pair with an early stop.

Variables: the input x in its Linf box (the ball cut to [0, 1]); per hidden layer, the
post-activation ``a`` of every neuron that is not dead (``u <= 0``: a = 0, dropped), and a
binary ``delta`` for every unstable neuron (``l < 0 < u``). Rows, with ``z = W a_prev + b``:
stable active ``a = z``; unstable ``a >= z``, ``a <= u delta``, ``a <= z - l (1 - delta)``
(``a >= 0`` is its lower bound): the exact ReLU given bounds ``l <= z <= u``, which is
where CROWN's (or IBP's) pre-activation bounds enter as the big-M constants. The tighter
they are, the fewer neurons are unstable and the tighter the LP relaxation.

Each pair (y, j) minimizes the margin ``logit_y - logit_j``; the solve stops as soon as a
point with a negative margin appears (a witness, checked on the model by the caller) or the
best bound exceeds the cutoff (no point below it exists: the pair is safe). HiGHS decides
up to its feasibility tolerances (1e-7 primal, 1e-6 integrality), which the cutoff's
rounding allowance covers for margins of usual scale.
"""
from __future__ import annotations

import ctypes
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

Tensor = torch.Tensor


@dataclass
class Program:
    """A built program: the HiGHS model (``highspy.HighsLp``), the input's columns, the last hidden layer's
    (columns, neuron positions), the unstable count and the output layer."""

    lp: object
    x_cols: np.ndarray
    last_cols: np.ndarray
    last_pos: np.ndarray
    unstable: int
    w_out: np.ndarray
    b_out: np.ndarray


def build(layers: list[tuple[Tensor, Tensor]], bounds: list[tuple[Tensor, Tensor]],
          lo: Tensor, hi: Tensor, *, relaxed: bool = False) -> Program:
    """The program of one input: dense float64 layers, hidden bounds (n_k,) per layer, the
    input box [lo, hi] (D,). ``relaxed``: every ``delta`` continuous in [0, 1], which makes
    the program the LP of the triangle relaxation (each unstable ReLU's set becomes the
    triangle ``a >= 0, a >= z, a <= u (z - l) / (u - l)`` once delta is projected out)."""
    import highspy

    col_lo, col_hi, integer = list(lo.numpy()), list(hi.numpy()), [0] * len(lo)
    starts, index, value, row_lo, row_hi = [0], [], [], [], []
    prev_cols, prev_pos = np.arange(len(lo)), np.arange(len(lo))
    unstable = 0

    def row(cols: np.ndarray, vals: np.ndarray, low: float, high: float) -> None:
        index.append(cols)
        value.append(vals)
        starts.append(starts[-1] + len(cols))
        row_lo.append(low)
        row_hi.append(high)

    for (w, b), (lb, ub) in zip(layers[:-1], bounds):
        w_np, b_np, l_np, u_np = w.numpy(), b.numpy(), lb.numpy(), ub.numpy()
        cols, pos = [], []
        for i in range(len(b_np)):
            l_i, u_i = float(l_np[i]), float(u_np[i])
            if u_i <= 0:
                continue
            a = len(col_lo)
            coef = w_np[i, prev_pos]
            keep = coef != 0
            z_cols = np.concatenate([[a], prev_cols[keep]])
            z_vals = np.concatenate([[1.0], -coef[keep]])
            if l_i >= 0:
                col_lo.append(l_i)
                col_hi.append(u_i)
                integer.append(0)
                row(z_cols, z_vals, float(b_np[i]), float(b_np[i]))
            else:
                d = a + 1
                col_lo += [0.0, 0.0]
                col_hi += [u_i, 1.0]
                integer += [0, 1]
                unstable += 1
                row(z_cols, z_vals, float(b_np[i]), highspy.kHighsInf)
                row(np.array([a, d]), np.array([1.0, -u_i]), -highspy.kHighsInf, 0.0)
                row(np.concatenate([z_cols, [d]]), np.concatenate([z_vals, [-l_i]]),
                    -highspy.kHighsInf, float(b_np[i]) - l_i)
            cols.append(a)
            pos.append(i)
        prev_cols, prev_pos = np.array(cols, dtype=np.int64), np.array(pos, dtype=np.int64)
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = len(col_lo), len(row_lo)
    lp.col_cost_ = np.zeros(len(col_lo))
    lp.col_lower_, lp.col_upper_ = np.array(col_lo), np.array(col_hi)
    lp.row_lower_, lp.row_upper_ = np.array(row_lo), np.array(row_hi)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.start_ = np.array(starts, dtype=np.int32)
    lp.a_matrix_.index_ = np.concatenate(index).astype(np.int32) if index else \
        np.zeros(0, np.int32)
    lp.a_matrix_.value_ = np.concatenate(value) if value else np.zeros(0)
    lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = lp.num_col_, lp.num_row_
    lp.integrality_ = [highspy.HighsVarType.kInteger if v and not relaxed
                       else highspy.HighsVarType.kContinuous for v in integer]
    w_out, b_out = layers[-1]
    return Program(lp, np.arange(len(lo)), prev_cols, prev_pos, unstable, w_out.numpy(),
                   b_out.numpy())


def quiet_highs() -> object:
    """A silent ``highspy.Highs``: its constructor prints a banner to the process's stdout
    (C level, once per process) before any option can be set, and only the CLI prints.
    File descriptor 1 points to /dev/null meanwhile. Run it with
    :func:`run_single_threaded`."""
    import highspy

    sys.stdout.flush()
    saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        ctypes.CDLL(None).fflush(None)
    finally:
        os.dup2(saved, 1)
        os.close(null)
        os.close(saved)
    return h


def run_single_threaded(h: Any) -> None:
    """``h.run()`` with ``threads`` 1. HiGHS keeps one thread scheduler per process: when
    other code in the process ran HiGHS with more threads first, the run fails with an
    error (not a verdict); the scheduler is then reset once and the run repeated.

    Raises:
        RuntimeError: HiGHS still reports an error.
    """
    import highspy

    h.setOptionValue("threads", 1)
    if h.run() == highspy.HighsStatus.kError:
        highspy.Highs.resetThreadScheduler(True)  # blocking: wait for its workers
        if h.run() == highspy.HighsStatus.kError:
            raise RuntimeError("HiGHS failed to solve the verification program")


@dataclass(frozen=True)
class Outcome:
    """A pair's verdict: "safe" (no point below the cutoff), "witness" (``x`` has a
    negative margin in the program), "open" (the minimum lies between 0 and the cutoff) or
    "timeout"; the solve's CPU seconds and bounds."""

    verdict: str
    x: np.ndarray | None
    seconds: float
    dual_bound: float
    primal_bound: float


def solve_pair(prog: Program, spec: np.ndarray, cutoff: float, time_limit: float) -> Outcome:
    """Minimize ``spec . logits`` (spec = e_y - e_j) until a negative point, a bound above
    ``cutoff``, or ``time_limit`` CPU seconds of this process (HiGHS's own limit, in wall
    time, is set to twenty times that: only a backstop, since a loaded machine stretches
    wall time several-fold)."""
    import highspy

    # A fresh solver per pair: one that was interrupted keeps its interrupt flag.
    h = quiet_highs()
    h.passModel(prog.lp)  # type: ignore[attr-defined]
    cost = np.zeros(prog.lp.num_col_)  # type: ignore[attr-defined]
    row = spec @ prog.w_out
    cost[prog.last_cols] = row[prog.last_pos]
    h.changeColsCost(len(cost), np.arange(len(cost), dtype=np.int32), cost)  # type: ignore
    h.changeObjectiveOffset(float(spec @ prog.b_out))  # type: ignore[attr-defined]
    h.setOptionValue("time_limit", max(20 * float(time_limit), 0.01))  # type: ignore
    h.setOptionValue("objective_bound", float(cutoff))  # type: ignore[attr-defined]
    found: dict[str, np.ndarray] = {}

    def improving(e: object) -> None:
        out = e.data_out  # type: ignore[attr-defined]
        if out.objective_function_value < 0:
            found["x"] = np.array(out.mip_solution)[prog.x_cols]
            e.interrupt()  # type: ignore[attr-defined]

    def check(e: object) -> None:
        if e.data_out.mip_dual_bound > cutoff:  # type: ignore[attr-defined]
            found["dual"] = np.array(e.data_out.mip_dual_bound)  # type: ignore[attr-defined]
            e.interrupt()  # type: ignore[attr-defined]
        elif time.process_time() - cpu > time_limit:
            e.interrupt()  # type: ignore[attr-defined]

    h.cbMipImprovingSolution.subscribe(improving)  # type: ignore[attr-defined]
    h.cbMipInterrupt.subscribe(check)  # type: ignore[attr-defined]
    cpu = time.process_time()
    try:
        run_single_threaded(h)
    finally:
        h.cbMipImprovingSolution.unsubscribe(improving)  # type: ignore[attr-defined]
        h.cbMipInterrupt.unsubscribe(check)  # type: ignore[attr-defined]
    seconds = time.process_time() - cpu
    info = h.getInfo()  # type: ignore[attr-defined]
    status = h.getModelStatus()  # type: ignore[attr-defined]
    dual = max(float(info.mip_dual_bound), float(found.get("dual", -np.inf)))
    primal = float(info.objective_function_value)
    if "x" in found:
        return Outcome("witness", found["x"], seconds, dual, primal)
    if status in (highspy.HighsModelStatus.kInfeasible, highspy.HighsModelStatus.kObjectiveBound
                  ) or dual > cutoff or (status == highspy.HighsModelStatus.kOptimal
                                         and primal > cutoff):
        return Outcome("safe", None, seconds, dual, primal)
    if status == highspy.HighsModelStatus.kOptimal and primal < 0:
        sol = np.array(h.getSolution().col_value)[prog.x_cols]  # type: ignore[attr-defined]
        return Outcome("witness", sol, seconds, dual, primal)
    if status == highspy.HighsModelStatus.kOptimal:
        return Outcome("open", None, seconds, dual, primal)
    return Outcome("timeout", None, seconds, dual, primal)
