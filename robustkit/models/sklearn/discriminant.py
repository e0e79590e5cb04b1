"""Generative classifiers: ``QuadraticDiscriminantAnalysis`` and ``GaussianNB``.

QDA's logits are its per-class log posterior up to a shared constant (scikit-learn's
``_decision_function``): ``decision_function`` itself for K > 2 classes, and for two
classes ``logits[:, 1] - logits[:, 0]`` is the binary ``decision_function``. GaussianNB
has no decision function: its logits are ``predict_log_proba``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn


class QDAHead(nn.Module):
    """``-0.5 (||(x - mean_k) @ R_k S_k^{-1/2}||^2 + sum log S_k) + log prior_k`` per class k.

    Args:
        dim: input features D.
        n_classes: K.
        rank: columns of the per-class whitening maps (classes of lower rank are padded
            with zero columns, which add nothing to the norm).
    """

    means: torch.Tensor
    whiten: torch.Tensor
    offset: torch.Tensor

    def __init__(self, dim: int, n_classes: int, rank: int) -> None:
        super().__init__()
        self.spec: dict[str, Any] = {"kind": "qda", "dim": int(dim),
                                     "n_classes": int(n_classes), "rank": int(rank)}
        f64 = torch.float64
        self.register_buffer("means", torch.zeros(n_classes, dim, dtype=f64))
        self.register_buffer("whiten", torch.zeros(n_classes, dim, rank, dtype=f64))
        self.register_buffer("offset", torch.zeros(n_classes, dtype=f64))

    @classmethod
    @torch.no_grad()
    def from_estimator(cls, est: Any) -> QDAHead:
        means = np.asarray(est.means_, dtype=np.float64)
        k, dim = means.shape
        rank = max(len(s) for s in est.scalings_)
        head = cls(dim, k, rank)
        whiten = np.zeros((k, dim, rank))
        for c, (r, s) in enumerate(zip(est.rotations_, est.scalings_)):
            whiten[c, :, :len(s)] = np.asarray(r) * np.asarray(s) ** -0.5
        u = np.array([np.sum(np.log(s)) for s in est.scalings_])
        head.means.copy_(torch.tensor(means))
        head.whiten.copy_(torch.tensor(whiten))
        head.offset.copy_(torch.tensor(-0.5 * u + np.log(est.priors_)))
        return head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centered = x[:, None, :] - self.means  # (N, K, D)
        z = torch.einsum("nkd,kdr->nkr", centered, self.whiten)
        return -0.5 * (z * z).sum(2) + self.offset


class GaussianNBHead(nn.Module):
    """``predict_log_proba``: log-softmax of the joint log likelihood
    ``log prior_k - 0.5 sum_d [log(2 pi var_kd) + (x_d - theta_kd)^2 / var_kd]``.

    Args:
        dim: input features D.
        n_classes: K.
    """

    theta: torch.Tensor
    var: torch.Tensor
    log_prior: torch.Tensor

    def __init__(self, dim: int, n_classes: int) -> None:
        super().__init__()
        self.spec: dict[str, Any] = {"kind": "gaussian_nb", "dim": int(dim),
                                     "n_classes": int(n_classes)}
        f64 = torch.float64
        self.register_buffer("theta", torch.zeros(n_classes, dim, dtype=f64))
        self.register_buffer("var", torch.ones(n_classes, dim, dtype=f64))
        self.register_buffer("log_prior", torch.zeros(n_classes, dtype=f64))

    @classmethod
    @torch.no_grad()
    def from_estimator(cls, est: Any) -> GaussianNBHead:
        theta = np.asarray(est.theta_, dtype=np.float64)
        head = cls(theta.shape[1], theta.shape[0])
        head.theta.copy_(torch.tensor(theta))
        head.var.copy_(torch.tensor(np.asarray(est.var_, dtype=np.float64)))
        head.log_prior.copy_(torch.tensor(np.log(est.class_prior_)))
        return head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = -0.5 * torch.log(2.0 * math.pi * self.var).sum(1)
        sq = ((x[:, None, :] - self.theta) ** 2 / self.var).sum(2)
        return torch.log_softmax(self.log_prior + norm - 0.5 * sq, dim=1)


def qda_types() -> set[type]:
    from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis

    return {QuadraticDiscriminantAnalysis}


def nb_types() -> set[type]:
    from sklearn.naive_bayes import GaussianNB

    return {GaussianNB}
