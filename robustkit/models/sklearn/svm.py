"""``SVC`` and ``NuSVC`` (libsvm, one-vs-one) as one batched kernel product.

libsvm trains one machine per pair of classes (i, j), i < j, in the order of
``classes_``. With all support vectors stacked (n_sv, D), the K(K-1)/2 pairwise decision
values are one product ``kernel(x, sv) @ coef + intercept`` (``coef`` is (n_sv, P): pair
(i, j) uses the class-i support vectors with ``dual_coef_[j - 1]`` and the class-j ones
with ``dual_coef_[i]``). :meth:`SVCHead.pairwise` is ``decision_function`` with
``decision_function_shape="ovo"``.

Logits are scikit-learn's one-vs-rest transformation of the pairwise values (what
``decision_function_shape="ovr"`` returns): per class, its number of pairwise wins plus
``c / (3 (|c| + 1))`` where ``c`` sums its signed pairwise confidences; the second term
lies in (-1/3, 1/3), so the argmax is a class with the most votes, and the logits are
differentiable (the votes are piecewise constant). ``predict`` (libsvm) breaks a tie in
votes towards the lowest class index, not by confidence: where that happens the other
tied classes' logits are lowered by 2/3 (a constant shift, gradients unchanged), so the
argmax is ``predict``'s class. With ``break_ties=True`` scikit-learn predicts the argmax
of the ovr scores and no shift is applied. With two classes the logits are
``[-d/2, d/2]`` for the decision function d.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

KERNELS = ("linear", "poly", "rbf", "sigmoid")


class SVCHead(nn.Module):
    """Pairwise libsvm decision values and their one-vs-rest logits.

    Args:
        dim: input features D.
        n_sv: number of support vectors.
        n_classes: K (>= 2); P = K(K-1)/2 pairwise machines.
        kernel: linear ``<x, sv>``, poly ``(gamma <x, sv> + coef0)^degree``,
            rbf ``exp(-gamma ||x - sv||^2)``, sigmoid ``tanh(gamma <x, sv> + coef0)``.
        gamma, degree, coef0: libsvm's kernel parameters (gamma resolved to a number).
        break_ties: the estimator's ``break_ties`` (see the module docstring).
    """

    support_vectors: torch.Tensor
    coef: torch.Tensor
    intercept: torch.Tensor

    def __init__(self, dim: int, n_sv: int, n_classes: int, kernel: str = "rbf",
                 gamma: float = 1.0, degree: int = 3, coef0: float = 0.0,
                 break_ties: bool = False) -> None:
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {list(KERNELS)}, got {kernel!r}")
        self.spec: dict[str, Any] = {
            "kind": "svc", "dim": int(dim), "n_sv": int(n_sv), "n_classes": int(n_classes),
            "kernel": kernel, "gamma": float(gamma), "degree": int(degree),
            "coef0": float(coef0), "break_ties": bool(break_ties)}
        n_pairs = n_classes * (n_classes - 1) // 2
        f64 = torch.float64
        self.register_buffer("support_vectors", torch.zeros(n_sv, dim, dtype=f64))
        self.register_buffer("coef", torch.zeros(n_sv, n_pairs, dtype=f64))
        self.register_buffer("intercept", torch.zeros(n_pairs, dtype=f64))
        pairs = [(i, j) for i in range(n_classes) for j in range(i + 1, n_classes)]
        self._i = [p[0] for p in pairs]
        self._j = [p[1] for p in pairs]

    @classmethod
    @torch.no_grad()
    def from_estimator(cls, est: Any) -> SVCHead:
        sv = np.asarray(est.support_vectors_, dtype=np.float64)
        k = len(est.classes_)
        gamma = est._gamma if est.kernel != "linear" else 1.0
        head = cls(sv.shape[1], sv.shape[0], k, kernel=est.kernel, gamma=float(gamma),
                   degree=int(est.degree), coef0=float(est.coef0),
                   break_ties=bool(getattr(est, "break_ties", False)))
        head.support_vectors.copy_(torch.tensor(sv))
        head.coef.copy_(torch.tensor(_pairwise_coef(est)))
        head.intercept.copy_(torch.tensor(np.asarray(est._intercept_, dtype=np.float64)))
        return head

    def kernel_matrix(self, x: torch.Tensor) -> torch.Tensor:
        """Kernel values (N, n_sv) between x (N, D) and the support vectors."""
        sv, s = self.support_vectors, self.spec
        dot = x @ sv.T
        if s["kernel"] == "linear":
            return dot
        if s["kernel"] == "poly":
            return (s["gamma"] * dot + s["coef0"]) ** s["degree"]
        if s["kernel"] == "sigmoid":
            return torch.tanh(s["gamma"] * dot + s["coef0"])
        sq = (x * x).sum(1, keepdim=True) - 2 * dot + (sv * sv).sum(1)
        return torch.exp(-s["gamma"] * sq.clamp_min(0))

    def pairwise(self, x: torch.Tensor) -> torch.Tensor:
        """Decision values (N, P) of the pairwise machines (positive: the lower class)."""
        return self.kernel_matrix(x) @ self.coef + self.intercept

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dec = self.pairwise(x)
        if self.spec["n_classes"] == 2:
            # scikit-learn's binary decision function is -dec (positive: classes_[1]).
            return torch.cat([dec / 2, -dec / 2], dim=1)
        return ovr_logits(dec, self._i, self._j, self.spec["n_classes"],
                          break_ties=self.spec["break_ties"])


def ovr_logits(dec: torch.Tensor, i: list[int], j: list[int], n_classes: int, *,
               break_ties: bool) -> torch.Tensor:
    """scikit-learn's ``_ovr_decision_function(dec < 0, -dec, K)``, vote ties as libsvm."""
    n = len(dec)
    ii = torch.tensor(i, device=dec.device).expand(n, -1)
    jj = torch.tensor(j, device=dec.device).expand(n, -1)
    win_j = (dec < 0).to(dec.dtype)
    zeros = torch.zeros(n, n_classes, dtype=dec.dtype, device=dec.device)
    votes = zeros.scatter_add(1, ii, 1 - win_j).scatter_add(1, jj, win_j)
    conf = zeros.scatter_add(1, ii, dec).scatter_add(1, jj, -dec)
    logits = votes + conf / (3 * (conf.abs() + 1))
    if break_ties:
        return logits
    tied = votes == votes.max(1, keepdim=True).values
    first = tied.to(torch.int8).argmax(1, keepdim=True)
    losers = tied & (torch.arange(n_classes, device=dec.device) != first)
    return logits - (2 / 3) * losers.to(dec.dtype)


def _pairwise_coef(est: Any) -> np.ndarray:
    """(n_sv, P) coefficients of the pairwise machines, in libsvm's sign convention."""
    k = len(est.classes_)
    # The public binary dual_coef_ is negated; _dual_coef_ keeps libsvm's signs.
    dual = np.asarray(est._dual_coef_ if k == 2 else est.dual_coef_, dtype=np.float64)
    start = np.concatenate([[0], np.cumsum(est.n_support_)])
    coef = np.zeros((dual.shape[1], k * (k - 1) // 2))
    p = 0
    for a in range(k):
        for b in range(a + 1, k):
            sa, sb = slice(start[a], start[a + 1]), slice(start[b], start[b + 1])
            coef[sa, p] = dual[b - 1, sa]
            coef[sb, p] = dual[a, sb]
            p += 1
    return coef


def svc_types() -> set[type]:
    from sklearn.svm import SVC, NuSVC

    return {SVC, NuSVC}
