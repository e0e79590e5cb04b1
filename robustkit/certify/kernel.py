"""Kernel SVM certificates: interval and mean-value bounds of the decision values over
input boxes, tightened by branch and bound (method ``"kernel"``).

Applies to the ``svm`` family (:class:`~robustkit.models.svm.KernelSVM`, one-vs-rest:
logits are the K decision values) and to imported ``SVC``/``NuSVC`` (one-vs-one: logits are
votes plus a confidence term), behind any affine front end (``Normalized``, Standardize/PCA
layers, scikit-learn scaler/PCA steps). Over a box B (the Linf ball intersected with
[0, 1]; for L2 the bounding box of the ball, looser, with branch and bound dropping the
sub-boxes that miss the ball), the bounds of ``kernel_bounds`` enclose every decision
value (or, one-vs-rest, every margin f_y - f_j directly, which keeps their shared terms).

How logits map to the prediction is followed exactly: one-vs-rest certifies when every
margin f_y - f_j is positive on B; one-vs-one when y's votes that are sure on B exceed
every other class's possible votes (an equal count suffices against a higher class index,
since libsvm gives a vote tie to the lowest index; not with ``break_ties=True``).

Soundness: float64 throughout, and a margin must exceed a rounding slack,
``rel * (sum_i |c_i| max k_i + |b|)`` (for a one-vs-rest margin, the coefficients and
intercepts of both scores) with rel 2e-5 where the model computes in float32 (a float32
KernelSVM, or float32 inputs) and 1e-12 in float64, so that the model's own rounding
cannot flip a certified sign (a margin inside the slack is left to the search for a
witness or stays unknown). 2e-5 is about 40 times the largest relative gap measured between
float32 and float64 evaluations (4.7e-7) of the default svm and gmm models on the
moons/xor/blobs/digits test points and as many uniform points; it is not a formal
rounding analysis.

References: Ranzato & Zanella, "Robustness Verification of Support Vector Machines",
SAS 2019 (arXiv:1904.11803), interval abstraction of SVMs; Hein & Andriushchenko,
NeurIPS 2017 (local Lipschitz bounds of kernel machines).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from robustkit.certify.base import CertifyResult, register
from robustkit.certify.front import Affine, peel
from robustkit.certify.kernel_bounds import expansion_bounds
from robustkit.certify.split import BoxBound, Budget, branch_and_bound, chunked
from robustkit.models.sklearn.svm import SVCHead
from robustkit.models.svm import KernelSVM

F64 = torch.float64


def rounding_slack(dtype: torch.dtype) -> float:
    """Relative slack a bound must clear for a model whose numbers are ``dtype``."""
    return 1e-12 if dtype == F64 else 2e-5


@dataclass(frozen=True)
class KernelHead:
    """A kernel expansion f = k(z, sv) @ coef + bias (P functions) and how the model turns
    it into a prediction: ``"argmax"`` of the P = K values, or ``"ovo"`` votes."""

    spec: dict[str, Any]
    sv: torch.Tensor
    coef: torch.Tensor
    bias: torch.Tensor
    rule: str
    n_classes: int
    rel: float
    break_ties: bool = False
    follows_input: bool = False  # computes in the dtype of x (KernelSVM), not float64


def kernel_head(model: nn.Module) -> tuple[Affine, KernelHead] | str:
    """The affine front and the kernel expansion of ``model``, or why there is none."""
    peeled = peel(model, (KernelSVM, SVCHead), "a kernel SVM (KernelSVM, SVC, NuSVC)")
    if isinstance(peeled, str):
        return peeled
    front, head = peeled
    if isinstance(head, KernelSVM):
        a = head.arch
        spec = {k: a[k] for k in ("kernel", "gamma", "degree", "coef0")}
        return front, KernelHead(spec, head.support_vectors.to(F64), head.dual_coef.to(F64),
                                 head.intercept.to(F64), "argmax", a["n_classes"],
                                 rounding_slack(head.dual_coef.dtype), follows_input=True)
    if isinstance(head, SVCHead):
        s = head.spec
        spec = {k: s[k] for k in ("kernel", "gamma", "degree", "coef0")}
        coef, bias, k = head.coef.to(F64), head.intercept.to(F64), s["n_classes"]
        if k == 2:  # logits [dec / 2, -dec / 2]: class 0 unless dec < 0
            return front, KernelHead(spec, head.support_vectors.to(F64),
                                     torch.cat([coef / 2, -coef / 2], 1),
                                     torch.cat([bias / 2, -bias / 2]), "argmax", 2,
                                     rounding_slack(coef.dtype))
        return front, KernelHead(spec, head.support_vectors.to(F64), coef, bias, "ovo", k,
                                 rounding_slack(coef.dtype), bool(s["break_ties"]))
    raise TypeError(f"unexpected head {type(head).__name__}")


def _applies(model: nn.Module, norm: str) -> str | None:
    found = kernel_head(model)
    return found if isinstance(found, str) else None


def _argmax_bound(head: KernelHead, front: Affine) -> Any:
    def bound(lo: torch.Tensor, hi: torch.Tensor, y: torch.Tensor) -> BoxBound:
        coef = head.coef.T[y][:, :, None] - head.coef[None]  # (B, n, K): f_y - f_j
        bias = head.bias[y][:, None] - head.bias[None]
        # the model rounds f_y and f_j separately: slack from |c_y| + |c_j|
        mag = head.coef.T[y][:, :, None].abs() + head.coef[None].abs()
        lower, _, scale, spread = expansion_bounds(head.spec, head.sv, coef, bias, front,
                                                   lo, hi, magnitude=mag)
        scale = scale + head.bias.abs()[y][:, None] + head.bias.abs()[None]
        rows = torch.arange(len(y), device=y.device)
        lower = (lower - head.rel * scale).index_put((rows, y), torch.tensor(float("inf"),
                                                                             dtype=F64))
        worst = lower.argmin(1)
        m = lower[rows, worst]
        return BoxBound(m > 0, spread[rows, worst].argmax(1), m)

    return bound


def _ovo_bound(head: KernelHead, front: Affine) -> Any:
    k = head.n_classes
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    pi = torch.tensor([p[0] for p in pairs])
    pj = torch.tensor([p[1] for p in pairs])
    classes = torch.arange(k)

    def bound(lo: torch.Tensor, hi: torch.Tensor, y: torch.Tensor) -> BoxBound:
        lower, upper, scale, spread = expansion_bounds(head.spec, head.sv, head.coef,
                                                       head.bias, front, lo, hi)
        slack = head.rel * (scale + head.bias.abs())
        i_wins, j_wins = lower - slack > 0, upper + slack < 0  # libsvm: j wins iff dec < 0
        b = len(y)
        zero = torch.zeros(b, k, dtype=torch.long)
        sure = zero.index_add(1, pi, i_wins.long()).index_add(1, pj, j_wins.long())
        can = zero.index_add(1, pi, (~j_wins).long()).index_add(1, pj, (~i_wins).long())
        vy = sure.gather(1, y[:, None])
        beats = (vy > can) | ((vy == can) & (classes > y[:, None]) & (not head.break_ties))
        beats |= classes == y[:, None]
        with_y = (pi == y[:, None]) | (pj == y[:, None])
        toward = torch.where(pi == y[:, None], lower - slack, -upper - slack)
        m = torch.where(with_y, toward, torch.tensor(float("inf"), dtype=F64)).amin(1)
        open_ = ~(i_wins | j_wins)
        focus = open_ & with_y
        focus = torch.where(focus.any(1, keepdim=True), focus, open_)
        split = (spread * focus[..., None]).sum(1).argmax(1)
        return BoxBound(beats.all(1), split, m)

    return bound


@register("kernel", applies=_applies, priority=20)
def kernel(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: tuple[float, ...],
           norm: str, time_limit: float, branch: bool = True, max_boxes: int = 512,
           rounds: int = 40, search_steps: int = 20, chunk: int = 0) -> list[CertifyResult]:
    """Certify a kernel SVM by interval/mean-value bounds and branch and bound over boxes.

    Args:
        model: a KernelSVM or imported SVC/NuSVC, possibly behind affine preprocessing.
        x: inputs (N, ...) in [0, 1]; y: int64 (N,) labels.
        eps: radii, ascending or not; norm: ``"linf"`` or ``"l2"``.
        time_limit: seconds per sample for the branch and bound.
        branch: split boxes that the bounds cannot decide (False: one bound of the ball).
        max_boxes: open boxes per sample before it is given up as unknown.
        rounds: rounds of halving per sample.
        search_steps: gradient steps of the initial witness search over the ball.
        chunk: boxes bounded at once (0: sized to keep intermediates near 2M numbers).

    Returns:
        One CertifyResult per eps.

    Example:
        >>> from robustkit import certify, load_dataset, models
        >>> model, _ = models.train("svm", "moons")
        >>> x, y, _ = load_dataset("moons", "test", limit=20)
        >>> r = certify.certify(model, x, y, eps=0.05, method="kernel")
        >>> r.decided_share
        1.0
    """
    found = kernel_head(model)
    if isinstance(found, str):
        raise TypeError(f"certificate 'kernel' does not apply: {found}")
    front, head = found
    if head.follows_input:
        head = replace(head, rel=max(head.rel, rounding_slack(x.dtype)))
    d = head.sv.shape[1]
    size = chunk or max(1, 2_000_000 // max(1, head.sv.shape[0] * d))
    make = _argmax_bound if head.rule == "argmax" else _ovo_bound
    budget = Budget(rounds=rounds if branch else 1, boxes=max_boxes, seconds=time_limit,
                    search_steps=search_steps)
    info = {"bound": "interval + mean value", "rule": head.rule, "kernel": head.spec["kernel"],
            "n_sv": int(head.sv.shape[0]), "branch": branch,
            "l2": "boxes bounding the L2 ball (looser), sub-boxes missing the ball dropped"}
    return branch_and_bound(model, x, y, eps=eps, norm=norm,
                            bound=chunked(make(head, front), size), method="kernel",
                            budget=budget, info=info)
