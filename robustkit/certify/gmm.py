"""Gaussian classifier certificates: bounds of Mahalanobis terms over boxes, branch and
bound (method ``"gmm"``).

Applies to the ``gmm`` family (:class:`~robustkit.models.gmm.GaussianMixtureClassifier`,
full/diag/spherical covariances, optional PCA front end) and to imported
``QuadraticDiscriminantAnalysis`` and ``GaussianNB`` heads, behind any affine front end.
Every one of them scores class k as ``log prior_k + LSE_m(c_m - maha_m(x) / 2)`` over its
components m, with ``maha_m(x) = ||M_m x + v_m||^2`` once the front end and the precision
factor are composed into M_m (full: the precision Cholesky factor; diag/spherical/NB: a
diagonal; QDA: its whitening map). GaussianNB's log-softmax subtracts the same number from
every class, so its argmax is that of the joint log-likelihood bounded here.

Bounds over a box B (the Linf ball in [0, 1], or the box bounding the L2 ball):

* ``u = M x + v`` is affine, so each coordinate's range over B is exact; the Mahalanobis
  term is a convex quadratic, bounded below by the larger of the per-coordinate bound
  (sum of the squared distances of 0 to each range) and the tangent plane at the box
  centre (convexity), and above by the smaller of the per-coordinate bound and the exact
  second-order expansion at the centre with ``|delta^T M^T M delta| <= ||ur||^2``.
  Log-sum-exp is increasing in each argument, so these give sound logit intervals, and a
  margin is certified when ``min logit_y - max logit_j > 0``.
* Mean value form on each margin ``m = logit_y - logit_j`` (keeps their shared first-order
  terms): ``m(x) >= m(c) - sum_d r_d max |d_d m(B)|``, with the gradient
  ``-sum_m pi_m M_m^T u_m`` enclosed through intervals of the responsibilities pi_m.

Float64 throughout; a margin must clear a rounding slack of ``rel`` (2e-5 where the model
computes in float32, 1e-12 in float64; see ``kernel``) times the magnitude of the terms the
model adds up.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from robustkit.certify.base import CertifyResult, register
from robustkit.certify.front import peel
from robustkit.certify.kernel import rounding_slack
from robustkit.certify.split import BoxBound, Budget, branch_and_bound, chunked
from robustkit.models.gmm import GaussianMixtureClassifier
from robustkit.models.sklearn.discriminant import GaussianNBHead, QDAHead

F64 = torch.float64


@dataclass(frozen=True)
class Gaussians:
    """Components in input space: maha_m = ||x @ M[m].T + v[m]||^2, class ``cls[m]``,
    constant ``const[m]``; logits = prior + LSE per class of (const - maha / 2)."""

    M: torch.Tensor
    v: torch.Tensor
    const: torch.Tensor
    cls: torch.Tensor
    prior: torch.Tensor
    rel: float
    follows_input: bool = False  # computes in the dtype of x (the gmm family), not float64


def _head_parts(head: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                          torch.Tensor, torch.Tensor, float]:
    """(Mz (C, r, d), mu (C, d), const, cls, prior, rel) of a Gaussian head in its z space."""
    if isinstance(head, GaussianMixtureClassifier):
        mu = head.means.to(F64).flatten(0, 1)
        k, m, d = head.means.shape
        chol = head.precisions_chol.to(F64).flatten(0, 1)
        cov = head.arch["covariance"]
        if cov == "full":
            mz = chol.transpose(1, 2)
            log_det = torch.diagonal(chol, dim1=-2, dim2=-1).log().sum(-1)
        elif cov == "diag":
            mz, log_det = torch.diag_embed(chol), chol.log().sum(-1)
        else:
            mz = chol[:, None, None] * torch.eye(d, dtype=F64)
            log_det = d * chol.log()
        const = head.log_weights.to(F64).flatten() + log_det - 0.5 * d * math.log(2 * math.pi)
        cls = torch.arange(k).repeat_interleave(m)
        return mz, mu, const, cls, head.log_priors.to(F64), rounding_slack(head.means.dtype)
    if isinstance(head, QDAHead):
        k = head.means.shape[0]
        return (head.whiten.to(F64).transpose(1, 2), head.means.to(F64),
                head.offset.to(F64), torch.arange(k), torch.zeros(k, dtype=F64), 1e-12)
    if isinstance(head, GaussianNBHead):
        var = head.var.to(F64)
        k = var.shape[0]
        const = head.log_prior.to(F64) - 0.5 * torch.log(2 * math.pi * var).sum(1)
        return (torch.diag_embed(var ** -0.5), head.theta.to(F64), const, torch.arange(k),
                torch.zeros(k, dtype=F64), 1e-12)
    raise TypeError(f"unexpected head {type(head).__name__}")


def gaussians(model: nn.Module) -> Gaussians | str:
    """The components of ``model`` in input space, or why it has none."""
    peeled = peel(model, (GaussianMixtureClassifier, QDAHead, GaussianNBHead),
                  "a Gaussian classifier (gmm, QDA, GaussianNB)")
    if isinstance(peeled, str):
        return peeled
    front, head = peeled
    mz, mu, const, cls, prior, rel = _head_parts(head)
    # u = Mz (A x + a - mu) = (Mz A) x + Mz (a - mu)
    mx = mz if front.weight is None else mz @ front.weight
    v = torch.einsum("crd,cd->cr", mz, front.bias - mu)
    return Gaussians(mx, v, const, cls, prior, rel,
                     follows_input=isinstance(head, GaussianMixtureClassifier))


def _applies(model: nn.Module, norm: str) -> str | None:
    found = gaussians(model)
    return found if isinstance(found, str) else None


def _class_lse(a: torch.Tensor, cls: torch.Tensor, k: int) -> torch.Tensor:
    """Per-class log-sum-exp (B, K) of component values a (B, C)."""
    out = torch.full((a.shape[0], k), float("-inf"), dtype=a.dtype)
    for c in range(k):
        out[:, c] = torch.logsumexp(a[:, cls == c], dim=1)
    return out


def logits_at(g: Gaussians, x: torch.Tensor) -> torch.Tensor:
    """Exact float64 logits (B, K) at flattened points x (B, D)."""
    u = torch.einsum("bD,crD->bcr", x, g.M) + g.v
    a = g.const - 0.5 * (u * u).sum(-1)
    return _class_lse(a, g.cls, len(g.prior)) + g.prior


def _responsibility(a_lo: torch.Tensor, a_hi: torch.Tensor, cls: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranges (B, C) of each component's share of its class, sigmoid(a_m - LSE of the
    class's other components), from ranges of the component values a."""
    c = len(cls)
    other = (cls[:, None] == cls[None]) & ~torch.eye(c, dtype=torch.bool)
    inf = torch.tensor(float("-inf"), dtype=F64)
    lse_hi = torch.where(other, a_hi[:, None, :], inf).logsumexp(-1)
    lse_lo = torch.where(other, a_lo[:, None, :], inf).logsumexp(-1)
    return torch.sigmoid(a_lo - lse_hi), torch.sigmoid(a_hi - lse_lo)


def _linear_margin(g: Gaussians, xr: torch.Tensor, q: torch.Tensor, h: torch.Tensor,
                   curve: torch.Tensor, at_c: torch.Tensor, a_lo: torch.Tensor,
                   a_hi: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Lower bounds (B, K) of logit_y - logit_j by one linear function of x per component.

    logit_y >= its tangent at the centre (log-sum-exp is convex) with each Mahalanobis term
    replaced by its upper bound ``q + grad . delta + curve``; logit_j <= a_m'(x) - log of
    the lowest responsibility of any component m' of j, with a_m' below its tangent (its
    Mahalanobis term is convex). The difference is linear in delta = x - centre and is
    minimized over the box in closed form; the best m' of each class is kept.
    Arguments: q (B, C) and h = M^T u (B, C, D) at the centre, ``curve`` (B, C) a bound of
    delta^T M^T M delta over the box.
    """
    k = len(g.prior)
    rows = torch.arange(len(y))
    a0 = g.const - 0.5 * q
    share = torch.exp(a0 - _class_lse(a0, g.cls, k)[:, g.cls])  # responsibilities at c
    mine = (g.cls[None] == y[:, None]).to(F64) * share  # (B, C): components of class y
    slope_y = -(mine[..., None] * h).sum(1)  # grad of the tangent of logit_y: -sum pi h
    low_y = at_c[rows, y] - 0.5 * (mine * curve).sum(1)
    p_lo, _ = _responsibility(a_lo, a_hi, g.cls)
    slope = slope_y[:, None, :] + h  # (B, C, D)
    per = (low_y[:, None] - g.prior[g.cls] - a0 + p_lo.log()
           - (slope.abs() * xr[:, None, :]).sum(-1))
    return torch.stack([per[:, g.cls == c].amax(1) for c in range(k)], 1)


def _bound(g: Gaussians) -> Any:
    k = len(g.prior)
    abs_m = g.M.abs()
    spectral = torch.linalg.matrix_norm(g.M, ord=2) ** 2 * (1 + 1e-12)  # (C,), outward

    def bound(lo: torch.Tensor, hi: torch.Tensor, y: torch.Tensor) -> BoxBound:
        xc, xr = (lo + hi) / 2, (hi - lo) / 2
        uc = torch.einsum("bD,crD->bcr", xc, g.M) + g.v
        ur = torch.einsum("bD,crD->bcr", xr, abs_m)
        w = torch.einsum("bcr,crD->bcD", uc, g.M)  # grad maha / 2 at the centre
        q, lin = (uc * uc).sum(-1), 2 * (xr[:, None, :] * w.abs()).sum(-1)
        maha_lo = torch.maximum(((uc.abs() - ur).clamp_min(0) ** 2).sum(-1), q - lin)
        # delta^T M^T M delta <= min(||ur||^2, ||M||_2^2 ||r||^2)
        curve = torch.minimum((ur * ur).sum(-1), spectral * (xr * xr).sum(1, keepdim=True))
        maha_hi = torch.minimum(((uc.abs() + ur) ** 2).sum(-1), q + lin + curve)
        a_lo, a_hi = g.const - 0.5 * maha_hi, g.const - 0.5 * maha_lo.clamp_min(0)
        l_lo = _class_lse(a_lo, g.cls, k) + g.prior
        l_hi = _class_lse(a_hi, g.cls, k) + g.prior
        # mean value form: grad logit_k = -sum_{m in k} pi_m M_m^T u_m
        p_lo, p_hi = _responsibility(a_lo, a_hi, g.cls)
        wr = torch.einsum("bcr,crD->bcD", ur, abs_m)
        wl, wh = w - wr, w + wr
        pl = torch.minimum(p_lo[..., None] * wl, p_hi[..., None] * wl)
        ph = torch.maximum(p_lo[..., None] * wh, p_hi[..., None] * wh)
        zero = torch.zeros(len(y), k, xc.shape[1], dtype=F64)
        gc = -zero.index_add(1, g.cls, (pl + ph) / 2)
        gr = zero.index_add(1, g.cls, (ph - pl) / 2)
        rows = torch.arange(len(y))
        at_c = logits_at(g, xc)
        spread = xr[:, None, :] * ((gc[rows, y][:, None] - gc).abs() + gr[rows, y][:, None] + gr)
        mv = at_c[rows, y][:, None] - at_c - spread.sum(-1)
        naive = l_lo[rows, y][:, None] - l_hi
        lin = _linear_margin(g, xr, q, w, curve, at_c, a_lo, a_hi, y)
        mag = 0.5 * ((torch.einsum("bD,crD->bcr", torch.maximum(lo.abs(), hi.abs()), abs_m)
                      + g.v.abs()) ** 2).sum(-1) + g.const.abs()
        size = torch.stack([mag[:, g.cls == c].amax(1) for c in range(k)], 1) + g.prior.abs()
        lower = torch.maximum(torch.maximum(naive, mv), lin) - g.rel * (size[rows, y][:, None] + size)
        lower[rows, y] = float("inf")
        worst = lower.argmin(1)
        m = lower[rows, worst]
        return BoxBound(m > 0, spread[rows, worst].argmax(1), m)

    return bound


@register("gmm", applies=_applies, priority=20)
def gmm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: tuple[float, ...],
        norm: str, time_limit: float, branch: bool = True, max_boxes: int = 512,
        rounds: int = 40, search_steps: int = 20, chunk: int = 0) -> list[CertifyResult]:
    """Certify a Gaussian classifier by Mahalanobis bounds and branch and bound over boxes.

    Args:
        model: a GaussianMixtureClassifier or imported QDA/GaussianNB, possibly behind
            affine preprocessing.
        x: inputs (N, ...) in [0, 1]; y: int64 (N,) labels.
        eps: radii; norm: ``"linf"`` or ``"l2"``.
        time_limit: seconds per sample for the branch and bound.
        branch, max_boxes, rounds, search_steps, chunk: as for the ``kernel`` method.

    Returns:
        One CertifyResult per eps.

    Example:
        >>> from robustkit import certify, load_dataset, models
        >>> x, y, _ = load_dataset("blobs", "test", limit=20)
        >>> rs = certify.certify(models.train("gmm", "blobs")[0], x, y, eps=[0.02, 0.05])
        >>> [(r.method, r.decided_share) for r in rs]
        [('gmm', 1.0), ('gmm', 1.0)]
    """
    g = gaussians(model)
    if isinstance(g, str):
        raise TypeError(f"certificate 'gmm' does not apply: {g}")
    if g.follows_input:
        g = replace(g, rel=max(g.rel, rounding_slack(x.dtype)))
    c, r, d = g.M.shape
    size = chunk or max(1, 2_000_000 // max(1, c * max(r, d)))
    budget = Budget(rounds=rounds if branch else 1, boxes=max_boxes, seconds=time_limit,
                    search_steps=search_steps)
    info = {"bound": "interval + tangent/second-order Mahalanobis, mean value on margins",
            "components": c, "branch": branch,
            "l2": "boxes bounding the L2 ball (looser), sub-boxes missing the ball dropped"}
    return branch_and_bound(model, x, y, eps=eps, norm=norm, bound=chunked(_bound(g), size),
                            method="gmm", budget=budget, info=info)
