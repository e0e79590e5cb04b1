"""The "crown" and "ibp" certificates of ReLU networks, and the runner they share with
"alpha-crown": margin lower bounds per chunk of samples, certified where above the
rounding allowance, PGD witnesses for the rest.

The bounds themselves: :mod:`robustkit.certify.crown_bounds` (CROWN) and
:func:`robustkit.certify.bounds.ibp_margins` (IBP).

Reference: Zhang, Weng, Chen, Hsieh & Daniel, "Efficient Neural Network Robustness
Certification with General Activation Functions", NeurIPS 2018 (arXiv:1811.00866);
Gowal et al., "On the Effectiveness of Interval Bound Propagation for Training Verifiably
Robust Models", 2018 (arXiv:1810.12715).
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from robustkit.certify.base import CertifyResult, register, undecided
from robustkit.certify.bounds import allowance, attack_witness, ibp_margins, result
from robustkit.certify.crown_bounds import (
    Layers,
    margin_bounds,
    preactivation_bounds,
    unstable_counts,
)
from robustkit.certify.dense import network
from robustkit.certify.layers import Unsupported, ops_of, reason

Tensor = torch.Tensor
# (dense layers, inputs (B, D) float64, labels, eps, norm) -> (margins (B, K-1), unstable (B,))
MarginFn = Callable[[Layers, Tensor, Tensor, float, str], tuple[Tensor, Tensor]]
__all__ = ["MarginFn", "crown", "crown_margins", "ibp", "margin_bounds", "preactivation_bounds",
           "run_margins", "unstable_counts"]


def crown_margins(layers: Layers, x0: Tensor, y: Tensor, eps: float, norm: str
                  ) -> tuple[Tensor, Tensor]:
    """CROWN's margin lower bounds (B, K-1) and unstable ReLUs per sample (B,)."""
    bounds = preactivation_bounds(layers, x0, eps, norm)
    return margin_bounds(layers, bounds, x0, y, eps, norm), unstable_counts(bounds)


def _applies(model: nn.Module, norm: str) -> str | None:
    return reason(model)


def run_margins(model: nn.Module, x: Tensor, y: Tensor, eps: tuple[float, ...], norm: str,
                method: str, attack_steps: int, chunk: int, margins_of: MarginFn | None
                ) -> list[CertifyResult]:
    """A certificate from margin lower bounds: ``margins_of`` on the network's dense layers
    per chunk of samples (None: IBP on the model's own ops), certified where the worst
    margin exceeds the rounding allowance, PGD witnesses (``attack_steps``) elsewhere."""
    start = time.perf_counter()
    ops = ops_of(model)
    with torch.no_grad():
        logits = model(x)
    correct = logits.argmax(1) == y
    x0 = x.detach().flatten(1).double().cpu()
    yc = y.cpu()
    try:
        layers = network(ops, tuple(x.shape[1:])) if margins_of is not None else []
    except Unsupported as exc:
        return [undecided(x, e, norm, method, f"cannot read {exc}") for e in eps]
    depth = max(len(layers), sum(op == "relu" for op in ops) + 1)
    width = max([x0.shape[1]] + [w.shape[0] for w, _ in layers])
    tol = allowance(model, logits, depth, width).cpu()
    out = []
    for e in eps:
        t0 = time.perf_counter()
        margins, unstable = [], []
        with torch.no_grad():
            for i in range(0, len(x0), chunk):
                xb, yb = x0[i:i + chunk], yc[i:i + chunk]
                if margins_of is None:
                    margins.append(ibp_margins(ops, xb.reshape(-1, *x.shape[1:]), yb, e))
                else:
                    m, u = margins_of(layers, xb, yb, e, norm)
                    margins.append(m)
                    unstable.append(u)
        worst = torch.cat(margins).amin(1)
        certified = (worst > tol).to(x.device) & correct
        broken, x_adv = attack_witness(model, x, y, e, norm, correct & ~certified, attack_steps)
        info = {"margin": worst}
        if unstable:
            info["unstable"] = torch.cat(unstable)
        per = (time.perf_counter() - t0 + (t0 - start if e == eps[0] else 0)) / max(len(x), 1)
        out.append(result(eps=e, norm=norm, method=method, certified=certified, broken=broken,
                          x_adv=x_adv, x=x, correct=correct,
                          seconds=torch.full((len(x),), per, dtype=torch.float64),
                          reasons=[f"{method} margin bound not positive"] * len(x), info=info))
    return out


@register("crown", applies=_applies, priority=40)
def crown(model: nn.Module, x: Tensor, y: Tensor, *, eps: tuple[float, ...], norm: str,
          time_limit: float, attack_steps: int = 20, chunk: int = 64) -> list[CertifyResult]:
    """CROWN bounds of the margins of a ReLU network (sound, not complete).

    Args:
        model: a model :mod:`robustkit.certify.layers` reads (Linear, Conv2d, ReLU, ...).
        x: (N, ...) inputs in [0, 1]; y: int64 (N,) labels.
        eps: radii, one result each. norm: ``"linf"`` or ``"l2"``.
        time_limit: unused (a fixed number of passes).
        attack_steps: PGD steps tried on the samples not certified, whose verified points
            make them ``broken`` (0: no attack, those samples stay ``unknown``).
        chunk: samples per batch.

    Returns:
        One ``CertifyResult`` per eps; ``info["margin"]`` is the lower bound of
        logit_y - max_j logit_j (N,), ``info["unstable"]`` the unstable ReLUs per sample.
    """
    return run_margins(model, x, y, eps, norm, "crown", attack_steps, chunk, crown_margins)


@register("ibp", applies=_applies, priority=50)
def ibp(model: nn.Module, x: Tensor, y: Tensor, *, eps: tuple[float, ...], norm: str,
        time_limit: float, attack_steps: int = 20, chunk: int = 256) -> list[CertifyResult]:
    """Interval bounds of the margins (sound, loosest, cheapest: two passes per sample).

    For L2 the intervals start from the ball's bounding box. Arguments as :func:`crown`.

    Returns:
        One ``CertifyResult`` per eps; ``info["margin"]`` as for ``crown``.
    """
    return run_margins(model, x, y, eps, norm, "ibp", attack_steps, chunk, None)
