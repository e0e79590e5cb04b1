"""Kernel SVMs trained by libsvm (one-vs-rest), evaluated as one batched torch kernel product.

Training uses scikit-learn's ``SVC`` (libsvm): one binary SVM per class, class k against
the rest, on raw flattened pixels in [0, 1]. The K machines are then carried into a single
:class:`KernelSVM` module holding the union of their support vectors (n_sv, D), a dual
coefficient matrix (n_sv, K) and intercepts (K,), so that all class scores are one kernel
matrix product, on any device and dtype, differentiable with respect to x.

Family parameters: ``kernel`` (rbf), ``C`` (10.0), ``gamma`` ("scale" = 1 / (D var(x_train)),
"auto" = 1 / D, or a number; the resolved number is kept in ``module.arch``), ``degree`` (3),
``coef0`` (0.0), ``max_train`` (10000: a stratified, seeded subsample; None = all).
The fitted module stores float32; :meth:`KernelSVM.from_svcs` gives the exact float64 one.

Cost: fitting is O(n_train^2) to O(n_train^3) kernel work per binary SVM (K of them), hence
``max_train``; a forward pass is O(N * n_sv * D) time and O(N * n_sv) memory.

Example:
    >>> from robustkit import models
    >>> model, rec = models.train("svm", "digits", kernel="poly", degree=2)
    >>> rec.test_accuracy > 0.95
    True
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from robustkit.models.inputs import SHAPE_RULES, check_arch, check_input
from robustkit.models.registry import Family, register
from robustkit.models.training import per_class
from robustkit.params import choice, either, integer, number, positive

KERNELS = ("linear", "poly", "rbf")
GAMMAS = ("scale", "auto")
DEFAULTS: dict[str, Any] = {
    "kernel": "rbf", "C": 10.0, "gamma": "scale", "degree": 3, "coef0": 0.0,
    "max_train": 10000,
}


class KernelSVM(nn.Module):
    """Scores ``f_k(x) = sum_i dual_coef[i, k] * kernel(x, sv_i) + intercept[k]``.

    Kernels (as in libsvm): ``linear`` <x, sv>; ``poly`` (gamma <x, sv> + coef0)^degree;
    ``rbf`` exp(-gamma ||x - sv||^2). Column k of the scores is the decision function of the
    binary SVM "class k vs rest". With two classes a single SVM f (class 1 positive) is
    trained and the logits are ``(-f(x), f(x))``: class 0 vs rest is the same problem with
    flipped labels, so its decision function is -f; ``logits[:, 1] - logits[:, 0] = 2 f(x)``.

    Args:
        input_shape: shape of one input, e.g. (1, 8, 8); inputs are flattened to D features.
        n_classes: number of classes K.
        n_sv: number of support vectors kept (the union over the K binary SVMs).
        kernel: ``linear``, ``poly`` or ``rbf``.
        gamma: kernel scale (a number: "scale"/"auto" are resolved at fit time).
        degree: polynomial degree (``poly`` only).
        coef0: polynomial offset (``poly`` only).
    """

    support_vectors: torch.Tensor
    dual_coef: torch.Tensor
    intercept: torch.Tensor

    def __init__(self, input_shape: list[int], n_classes: int, n_sv: int, kernel: str = "rbf",
                 gamma: float = 1.0, degree: int = 3, coef0: float = 0.0) -> None:
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {list(KERNELS)}, got {kernel!r}")
        check_arch("svm", {"input_shape": input_shape, "n_classes": n_classes, "n_sv": n_sv,
                           "gamma": gamma, "degree": degree, "coef0": coef0},
                   {**SHAPE_RULES, "n_sv": integer(0), "gamma": number(), "degree": integer(0),
                    "coef0": number()})
        self.arch: dict[str, Any] = {
            "input_shape": [int(s) for s in input_shape], "n_classes": int(n_classes),
            "n_sv": int(n_sv), "kernel": kernel, "gamma": float(gamma),
            "degree": int(degree), "coef0": float(coef0)}
        dim = math.prod(self.arch["input_shape"])
        self.register_buffer("support_vectors", torch.zeros(n_sv, dim))
        self.register_buffer("dual_coef", torch.zeros(n_sv, n_classes))
        self.register_buffer("intercept", torch.zeros(n_classes))

    def kernel_matrix(self, x: torch.Tensor) -> torch.Tensor:
        """Kernel values (N, n_sv) between flattened x (N, ...) and the support vectors."""
        flat = x.flatten(1)
        sv = self.support_vectors.to(flat.dtype)
        kernel, gamma = self.arch["kernel"], self.arch["gamma"]
        dot = flat @ sv.T
        if kernel == "linear":
            return dot
        if kernel == "poly":
            return (gamma * dot + self.arch["coef0"]) ** self.arch["degree"]
        sq = (flat * flat).sum(1, keepdim=True) - 2 * dot + (sv * sv).sum(1)
        return torch.exp(-gamma * sq.clamp_min(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (N, K) for x (N, ...) in [0, 1]; dtype follows x."""
        check_input(x, self.arch["input_shape"], "svm")
        flat = x.flatten(1)
        dual = self.dual_coef.to(flat.dtype)
        bias = self.intercept.to(flat.dtype)
        if self.arch["kernel"] == "linear":
            # Collapse the expansion into one weight matrix: O(N * D * K) instead of N * n_sv * D.
            return flat @ (self.support_vectors.to(flat.dtype).T @ dual) + bias
        return self.kernel_matrix(flat) @ dual + bias

    @classmethod
    @torch.no_grad()
    def from_svcs(cls, svcs: Sequence[Any], input_shape: list[int],
                  n_classes: int) -> KernelSVM:
        """Carry fitted binary ``SVC``s (all fit on the same x) into one float64 module.

        Args:
            svcs: K machines, ``svcs[k]`` trained on labels ``y == k``; or, for
                ``n_classes == 2``, one machine trained on ``y == 1``.
            input_shape: shape of one input.
            n_classes: K.

        Example:
            >>> from sklearn.svm import SVC
            >>> x = np.array([[0.0, 0.0], [0.1, 0.0], [1.0, 1.0], [0.9, 1.0]])
            >>> svc = SVC(kernel="rbf", gamma=1.0).fit(x, [0, 0, 1, 1])
            >>> m = KernelSVM.from_svcs([svc], [2], 2)
            >>> bool(torch.allclose(m(torch.tensor(x))[:, 1],
            ...                     torch.tensor(svc.decision_function(x))))
            True
        """
        binary = n_classes == 2 and len(svcs) == 1
        if not binary and len(svcs) != n_classes:
            raise ValueError(f"need {n_classes} binary SVCs (one per class), got {len(svcs)}")
        first = svcs[0]
        gamma = first.gamma if not isinstance(first.gamma, str) else first._gamma
        if any(_kernel_of(s) != _kernel_of(first) for s in svcs):
            raise ValueError("all SVCs must share kernel, gamma, degree and coef0")
        rows: dict[int, np.ndarray] = {}
        for svc in svcs:
            rows.update(zip(svc.support_.tolist(), np.asarray(svc.support_vectors_)))
        order = sorted(rows)
        where = {idx: i for i, idx in enumerate(order)}
        dual = np.zeros((len(order), n_classes))
        bias = np.zeros(n_classes)
        for k, svc in enumerate(svcs, start=1 if binary else 0):
            at = [where[i] for i in svc.support_.tolist()]
            dual[at, k] = svc.dual_coef_[0]
            bias[k] = svc.intercept_[0]
        if binary:
            dual[:, 0], bias[0] = -dual[:, 1], -bias[1]
        module = cls(input_shape, n_classes, len(order), kernel=first.kernel, gamma=float(gamma),
                     degree=int(first.degree), coef0=float(first.coef0)).double()
        if order:
            module.support_vectors.copy_(torch.from_numpy(np.stack([rows[i] for i in order])))
        module.dual_coef.copy_(torch.from_numpy(dual))
        module.intercept.copy_(torch.from_numpy(bias))
        return module.eval()


def _kernel_of(svc: Any) -> tuple:
    return (svc.kernel, svc._gamma, svc.degree, svc.coef0)


def fit_svcs(x: np.ndarray, y: np.ndarray, *, n_classes: int, kernel: str = "rbf",
             C: float = 1.0, gamma: float = 1.0, degree: int = 3, coef0: float = 0.0,
             progress: bool = False) -> list[Any]:
    """Fit the one-vs-rest binary ``SVC``s that :meth:`KernelSVM.from_svcs` carries over.

    Args:
        x: (n, D) float64 features; y: (n,) labels in [0, n_classes), every class present.
        n_classes: K; for K = 2 a single machine (class 1 vs class 0) is fit.
        kernel, C, gamma, degree, coef0: libsvm's parameters (gamma a number).

    Returns:
        The fitted machines, ``[svc_k]`` for class k vs rest (``[svc_1]`` when K = 2).

    Example:
        >>> x = np.array([[0.0, 0.0], [0.1, 0.0], [1.0, 1.0], [0.9, 1.0]])
        >>> len(fit_svcs(x, np.array([0, 0, 1, 1]), n_classes=2))
        1
    """
    from sklearn.svm import SVC

    counts = np.bincount(y, minlength=n_classes)
    if len(counts) > n_classes or (counts == 0).any():
        raise ValueError(f"svm needs training samples of every class 0..{n_classes - 1}; "
                         f"class counts are {counts.tolist()}")
    classes = [1] if n_classes == 2 else list(range(n_classes))
    svcs = []
    for k in per_class(classes, progress, "svm"):
        svc = SVC(kernel=kernel, C=C, gamma=gamma, degree=degree, coef0=coef0, cache_size=500)
        svcs.append(svc.fit(x, (y == k).astype(np.int64)))
    return svcs


def resolve_gamma(gamma: Any, x: np.ndarray) -> float:
    """A number from ``gamma``: "scale" = 1 / (D var(x)), "auto" = 1 / D (as scikit-learn)."""
    if gamma == "scale":
        var = float(x.var())
        return 1.0 / (x.shape[1] * var) if var > 0 else 1.0
    if gamma == "auto":
        return 1.0 / x.shape[1]
    if isinstance(gamma, (int, float)) and not isinstance(gamma, bool) and gamma > 0:
        return float(gamma)
    raise ValueError(f"svm: gamma={gamma!r} is not valid; choose from {list(GAMMAS)} "
                     "or a positive number")


def _check(params: dict) -> None:
    def positive(key: str, integer: bool = False) -> None:
        v = params[key]
        kind = int if integer else (int, float)
        if isinstance(v, bool) or not isinstance(v, kind) or not float(v) > 0:
            what = "integer" if integer else "number"
            raise ValueError(f"svm: {key}={v!r} is not valid; expected a positive {what}")

    positive("C")
    positive("degree", integer=True)
    if params["max_train"] is not None:
        positive("max_train", integer=True)
    coef0 = params["coef0"]
    if isinstance(coef0, bool) or not isinstance(coef0, (int, float)):
        raise TypeError(f"svm: coef0={coef0!r} is not valid; expected a number")


def _subsample(x: torch.Tensor, y: torch.Tensor, n: int | None,
               seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if n is None or n >= len(y):
        return x, y
    from sklearn.model_selection import train_test_split

    labels = y.numpy()
    counts = np.bincount(labels)
    strat = labels if n >= len(counts) and counts[counts > 0].min() >= 2 else None
    keep, _ = train_test_split(np.arange(len(labels)), train_size=n, stratify=strat,
                               random_state=seed)
    keep = torch.from_numpy(np.sort(keep))
    return x[keep], y[keep]


def _fit(x: torch.Tensor, y: torch.Tensor, *, n_classes: int, params: dict, seed: int,
         device: torch.device, progress: bool) -> KernelSVM:
    _check(params)
    x, y = _subsample(x, y, params["max_train"], seed)
    flat = x.reshape(len(x), -1).double().numpy()
    gamma = resolve_gamma(params["gamma"], flat)
    svcs = fit_svcs(flat, y.numpy(), n_classes=n_classes, kernel=params["kernel"],
                    C=float(params["C"]), gamma=gamma, degree=int(params["degree"]),
                    coef0=float(params["coef0"]), progress=progress)
    # libsvm runs on the CPU; the module is returned there (float32) and moved by the caller.
    return KernelSVM.from_svcs(svcs, list(x.shape[1:]), n_classes).float()


register(Family(
    name="svm",
    defaults=DEFAULTS,
    choices={"kernel": KERNELS},
    rules={"C": positive(), "gamma": either(choice(*GAMMAS), positive()), "degree": integer(1),
           "coef0": number(), "max_train": integer(1, none=True)},
    fit=_fit,
    module=KernelSVM,
    doc="kernel SVM (linear/poly/rbf; C, gamma, degree, coef0), libsvm one-vs-rest, "
        "max_train subsample",
))
