"""Tiny ReLU networks on 2-D toy data and exact answers for them (brute force)."""
from __future__ import annotations

import functools
import itertools

import numpy as np
import torch

from robustkit import load_dataset, models
from robustkit.certify.dense import network
from robustkit.certify.layers import ops_of


@functools.cache
def tiny_net() -> torch.nn.Module:
    """An MLP with hidden layers (8, 6) trained on blobs (3 classes, 2-D), cached."""
    tr = load_dataset("blobs", "train", seed=0)
    spec = models.create("mlp", hidden=[8, 6], epochs=20, lr=1e-2)
    return spec.fit(tr.x, tr.y, n_classes=int(tr.y.max()) + 1, seed=0)


def tiny_task(n: int = 40) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    te = load_dataset("blobs", "test", seed=0)
    return tiny_net(), te.x[:n], te.y[:n]


def grid_margins(model: torch.nn.Module, x0: torch.Tensor, y: int, eps: float, norm: str,
                 steps: int = 121) -> torch.Tensor:
    """The model's margins logit_y - logit_j (K-1,) minimized over a grid of the eps-ball
    around a 2-D point inside [0, 1] (float64, through the chain the certificates read)."""
    axis = torch.linspace(-eps, eps, steps, dtype=torch.float64)
    d = torch.cartesian_prod(axis, axis)
    if norm == "l2":
        d = d[torch.linalg.vector_norm(d, dim=1) <= eps]
    p = x0.double() + d
    p = p[((p >= 0) & (p <= 1)).all(1)]
    out = p
    for op in ops_of(model):
        out = torch.relu(out) if op == "relu" else op.fn(out)
    k = out.shape[1]
    return (out[:, y:y + 1] - out[:, [j for j in range(k) if j != y]]).amin(0)


def exact_margins(model: torch.nn.Module, x0: torch.Tensor, y: int, eps: float,
                  max_unstable: int = 10) -> np.ndarray | None:
    """Minimum of each margin over the Linf ball in the box by enumerating the activation
    patterns of the neurons that the box leaves undecided (one LP per pattern); None when
    more than ``max_unstable`` are."""
    from scipy.optimize import linprog

    layers = network(ops_of(model), (2,))
    lo = (x0.double() - eps).clamp(0, 1).numpy()
    hi = (x0.double() + eps).clamp(0, 1).numpy()
    signs = _possible_signs(layers, lo, hi)
    free = [(k, i) for k, s in enumerate(signs) for i, v in enumerate(s) if v is None]
    if len(free) > max_unstable:
        return None
    k_out = layers[-1][0].shape[0]
    best = np.full(k_out - 1, np.inf)
    for pattern in itertools.product([0, 1], repeat=len(free)):
        chosen = [list(s) for s in signs]
        for (k, i), v in zip(free, pattern):
            chosen[k][i] = v
        a, c = np.eye(2), np.zeros(2)
        rows, rhs = [], []
        for (w, b), s in zip(layers[:-1], chosen):
            za, zc = w.numpy() @ a, w.numpy() @ c + b.numpy()
            for i, v in enumerate(s):  # v = 1: z_i >= 0; v = 0: z_i <= 0
                rows.append(-za[i] if v else za[i])
                rhs.append(zc[i] if v else -zc[i])
            mask = np.array(s, dtype=float)[:, None]
            a, c = za * mask, zc * mask[:, 0]
        w, b = layers[-1]
        oa, oc = w.numpy() @ a, w.numpy() @ c + b.numpy()
        for p, j in enumerate(j for j in range(k_out) if j != y):
            res = linprog(oa[y] - oa[j], A_ub=np.array(rows), b_ub=np.array(rhs),
                          bounds=list(zip(lo, hi)), method="highs")
            if res.status == 0:
                best[p] = min(best[p], res.fun + oc[y] - oc[j])
    return best


def _possible_signs(layers, lo, hi):
    """Per hidden layer, per neuron: 1 (always active), 0 (always off) or None, from
    interval bounds over the box."""
    out, l, u = [], torch.tensor(lo), torch.tensor(hi)
    for w, b in layers[:-1]:
        mid, rad = (u + l) / 2, (u - l) / 2
        zl, zu = w @ mid + b - w.abs() @ rad, w @ mid + b + w.abs() @ rad
        out.append([1 if a >= 0 else 0 if c <= 0 else None for a, c in zip(zl.tolist(),
                                                                            zu.tolist())])
        l, u = zl.clamp_min(0), zu.clamp_min(0)
    return out


@functools.cache
def tiny_linear() -> torch.nn.Module:
    """The linear family (softmax regression) on blobs, cached."""
    tr = load_dataset("blobs", "train", seed=0)
    return models.create("linear").fit(tr.x, tr.y, n_classes=int(tr.y.max()) + 1, seed=0)


def lp_margins(model: torch.nn.Module, x0: torch.Tensor, y: int, eps: float) -> np.ndarray:
    """Minimum of each margin under the LP relaxation of the MILP (binaries relaxed to
    [0, 1], i.e. the triangle relaxation of each unstable ReLU) with the CROWN
    pre-activation bounds: no bound computed from the same pre-activation bounds by a
    linear relaxation (CROWN) can exceed it."""
    from robustkit.certify.crown import preactivation_bounds
    from robustkit.certify.milp_model import build, quiet_highs, run_single_threaded

    layers = network(ops_of(model), tuple(x0.shape))
    flat = x0.double().flatten()[None]
    bounds = [(lo[0], hi[0]) for lo, hi in preactivation_bounds(layers, flat, eps, "linf")]
    lo, hi = (flat[0] - eps).clamp(0, 1), (flat[0] + eps).clamp(0, 1)
    prog = build(layers, bounds, lo, hi, relaxed=True)
    k = layers[-1][0].shape[0]
    out = []
    for j in (j for j in range(k) if j != y):
        spec = np.zeros(k)
        spec[y], spec[j] = 1.0, -1.0
        cost = np.zeros(prog.lp.num_col_)
        cost[prog.last_cols] = (spec @ prog.w_out)[prog.last_pos]
        prog.lp.col_cost_ = cost
        h = quiet_highs()
        h.passModel(prog.lp)
        run_single_threaded(h)
        out.append(h.getInfo().objective_function_value + float(spec @ prog.b_out))
    return np.array(out)
