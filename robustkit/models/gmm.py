"""Generative classifier: one Gaussian mixture per class, fit by scikit-learn's EM.

``logits[:, k] = log prior_k + log p(z | k)`` with ``z`` the flattened input, optionally
projected by a PCA front end fitted on the training data (``pca=50`` for MNIST: full
covariances on raw pixels are ill-conditioned). ``log p(z | k)`` is the log-sum-exp over
components m of ``log w_km + log N(z; mu_km, Sigma_km)``, computed from the precision
Cholesky factors as scikit-learn does, so it equals the class mixture's ``score_samples``.
With a PCA front end it is the density of the projection z, not of x.

Family parameters: ``n_components`` M (2), ``covariance`` (full, diag, spherical), ``reg``
(1e-2, added to every covariance diagonal), ``pca`` (None or the number of axes), ``max_iter``
(100), ``n_init`` (1). Log priors are the training class frequencies. The fitted module
stores float32; :meth:`GaussianMixtureClassifier.from_mixtures` gives the exact float64 one.
For MNIST: ``pca=50, n_components=5, reg=0.1``.

Cost: EM is O(n_iter * n * M * d^2) per class for full covariances (d = pca or D); a
forward pass is O(N * K * M * d^2) (full) or O(N * K * M * d) (diag, spherical).

Example:
    >>> from robustkit import models
    >>> model, rec = models.train("gmm", "digits", covariance="diag", n_components=4, pca=30)
    >>> rec.test_accuracy > 0.95
    True
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from robustkit.models.inputs import SHAPE_RULES, check_arch, check_input
from robustkit.models.preprocess import PCA
from robustkit.models.registry import Family, register
from robustkit.models.training import per_class
from robustkit.params import integer, number

COVARIANCES = ("full", "diag", "spherical")
DEFAULTS: dict[str, Any] = {
    "n_components": 2, "covariance": "full", "reg": 1e-2, "pca": None, "max_iter": 100,
    "n_init": 1,
}
_LOG_2PI = math.log(2 * math.pi)


class GaussianMixtureClassifier(nn.Module):
    """Class-conditional Gaussian mixtures scored as log prior + log-likelihood.

    Args:
        input_shape: shape of one input, e.g. (1, 8, 8); inputs are flattened to D features.
        n_classes: number of classes K.
        n_components: mixture components M per class.
        covariance: ``full``, ``diag`` or ``spherical``.
        pca: number of principal axes of the front end, or None for raw features.
    """

    means: torch.Tensor
    precisions_chol: torch.Tensor
    log_weights: torch.Tensor
    log_priors: torch.Tensor
    pca: PCA | None

    def __init__(self, input_shape: list[int], n_classes: int, n_components: int,
                 covariance: str = "full", pca: int | None = None) -> None:
        super().__init__()
        if covariance not in COVARIANCES:
            raise ValueError(f"covariance must be one of {list(COVARIANCES)}, "
                             f"got {covariance!r}")
        check_arch("gmm", {"input_shape": input_shape, "n_classes": n_classes,
                           "n_components": n_components, "pca": pca},
                   {**SHAPE_RULES, "n_components": integer(1), "pca": integer(1, none=True)})
        self.arch: dict[str, Any] = {
            "input_shape": [int(s) for s in input_shape], "n_classes": int(n_classes),
            "n_components": int(n_components), "covariance": covariance,
            "pca": None if pca is None else int(pca)}
        dim = math.prod(self.arch["input_shape"])
        self.pca = PCA(dim, pca) if pca is not None else None
        d = pca if pca is not None else dim
        km = (n_classes, n_components)
        chol_shape = {"full": (*km, d, d), "diag": (*km, d), "spherical": km}[covariance]
        self.register_buffer("means", torch.zeros(*km, d))
        self.register_buffer("precisions_chol", torch.zeros(chol_shape))
        self.register_buffer("log_weights", torch.zeros(km))
        self.register_buffer("log_priors", torch.zeros(n_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The mixtures' input z (N, d): flattened x, projected when there is a PCA front end."""
        flat = x.flatten(1)
        if self.pca is None:
            return flat
        # PCA.forward needs x in the buffers' dtype; here the dtype follows x instead.
        mean, comp = (cast(torch.Tensor, t).to(flat.dtype)
                      for t in (self.pca.mean, self.pca.components))
        return (flat - mean) @ comp.T

    def log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(z | k)`` (N, K) for x (N, ...); dtype follows x."""
        z = self.features(x)
        dt = z.dtype
        mu, chol = self.means.to(dt), self.precisions_chol.to(dt)
        d = z.shape[1]
        cov = self.arch["covariance"]
        if cov == "full":
            # ||(z - mu) P||^2 with P the precision Cholesky factor (precision = P P^T).
            y = torch.einsum("nd,kmde->nkme", z, chol) - torch.einsum("kmd,kmde->kme", mu, chol)
            maha = (y * y).sum(-1)
            log_det = torch.diagonal(chol, dim1=-2, dim2=-1).log().sum(-1)
        elif cov == "diag":
            prec = chol * chol
            maha = ((z * z) @ prec.flatten(0, 1).T - 2 * z @ (mu * prec).flatten(0, 1).T
                    ).unflatten(1, prec.shape[:2]) + (mu * mu * prec).sum(-1)
            log_det = chol.log().sum(-1)
        else:
            prec = chol * chol
            sq = ((z * z).sum(1, keepdim=True) - 2 * z @ mu.flatten(0, 1).T
                  ).unflatten(1, prec.shape) + (mu * mu).sum(-1)
            maha = sq * prec
            log_det = d * chol.log()
        log_gauss = -0.5 * (d * _LOG_2PI + maha) + log_det
        return torch.logsumexp(log_gauss + self.log_weights.to(dt), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, K) = log prior + log p(z | k) for x (N, ...) in [0, 1]."""
        check_input(x, self.arch["input_shape"], "gmm")
        return self.log_likelihood(x) + self.log_priors.to(x.dtype)

    @classmethod
    @torch.no_grad()
    def from_mixtures(cls, mixtures: Sequence[Any], log_priors: Sequence[float] | np.ndarray,
                      input_shape: list[int], pca: PCA | None = None
                      ) -> GaussianMixtureClassifier:
        """Carry fitted ``GaussianMixture``s (one per class) into one float64 module.

        Args:
            mixtures: K fitted mixtures sharing n_components and covariance_type.
            log_priors: K log class priors.
            input_shape: shape of one input.
            pca: the fitted PCA front end the mixtures were trained behind, or None.

        Example:
            >>> from sklearn.mixture import GaussianMixture
            >>> rng = np.random.default_rng(0)
            >>> gms = [GaussianMixture(1, random_state=0).fit(rng.normal(k, 1, (20, 2)))
            ...        for k in range(2)]
            >>> m = GaussianMixtureClassifier.from_mixtures(gms, [np.log(0.5)] * 2, [2])
            >>> tuple(m(torch.zeros(3, 2, dtype=torch.float64)).shape)
            (3, 2)
        """
        first = mixtures[0]
        if any((g.n_components, g.covariance_type) != (first.n_components, first.covariance_type)
               for g in mixtures):
            raise ValueError("all mixtures must share n_components and covariance_type")
        k = len(cast(torch.Tensor, pca.components)) if pca is not None else None
        module = cls(input_shape, len(mixtures), first.n_components, first.covariance_type,
                     k).double()
        if pca is not None and module.pca is not None:
            module.pca.load_state_dict(pca.state_dict())
        for name, attr in [("means", "means_"), ("precisions_chol", "precisions_cholesky_"),
                           ("log_weights", "weights_")]:
            values = np.stack([getattr(g, attr) for g in mixtures])
            values = np.log(values) if attr == "weights_" else values
            getattr(module, name).copy_(torch.from_numpy(values))
        module.log_priors.copy_(torch.as_tensor(np.asarray(log_priors, dtype=np.float64)))
        return module.eval()


def fit_mixtures(z: np.ndarray, y: np.ndarray, *, n_classes: int, n_components: int = 2,
                 covariance: str = "full", reg: float = 1e-2, max_iter: int = 100,
                 n_init: int = 1, seed: int = 0, progress: bool = False) -> list[Any]:
    """Fit one scikit-learn ``GaussianMixture`` per class on features z (n, d).

    Args:
        z: (n, d) float64 features; y: (n,) labels in [0, n_classes).
        n_classes: K; every class needs at least ``n_components`` samples.
        reg: added to the diagonal of every covariance (``reg_covar``).
        seed: ``random_state`` of every mixture (k-means initialization).

    Returns:
        The K fitted mixtures, class order.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> z, y = rng.normal(size=(40, 2)), np.repeat([0, 1], 20)
        >>> len(fit_mixtures(z, y, n_classes=2, n_components=1))
        2
    """
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits

    counts = np.bincount(y, minlength=n_classes)
    if len(counts) > n_classes or (counts < n_components).any():
        raise ValueError(f"gmm needs at least n_components={n_components} training samples "
                         f"of every class 0..{n_classes - 1}; class counts are "
                         f"{counts.tolist()}")
    mixtures = []
    # EM on one class is many small BLAS calls plus a k-means init: threads only add
    # overhead there and oversubscribe the CPU badly when fits run side by side (sweeps),
    # so they run single-threaded, as scikit-learn's own KMeans limits its BLAS.
    with threadpool_limits(limits=1):
        for k in per_class(list(range(n_classes)), progress, "gmm"):
            gm = GaussianMixture(n_components, covariance_type=covariance, reg_covar=reg,
                                 max_iter=max_iter, n_init=n_init, random_state=seed)
            mixtures.append(gm.fit(z[y == k]))
    return mixtures


def _check(params: dict, n: int, dim: int) -> None:
    for key in ("n_components", "max_iter", "n_init"):
        v = params[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"gmm: {key}={v!r} is not valid; expected a positive integer")
    reg = params["reg"]
    if isinstance(reg, bool) or not isinstance(reg, (int, float)) or reg < 0:
        raise ValueError(f"gmm: reg={reg!r} is not valid; expected a number >= 0")
    pca = params["pca"]
    if pca is not None and (isinstance(pca, bool) or not isinstance(pca, int)
                            or not 1 <= pca <= min(n, dim)):
        raise ValueError(f"gmm: pca={pca!r} is not valid; expected None or an integer "
                         f"in [1, {min(n, dim)}]")


def _fit(x: torch.Tensor, y: torch.Tensor, *, n_classes: int, params: dict, seed: int,
         device: torch.device, progress: bool) -> GaussianMixtureClassifier:
    flat = x.reshape(len(x), -1).double()
    _check(params, len(flat), flat.shape[1])
    pca = None
    z = flat
    if params["pca"] is not None:
        pca = PCA(flat.shape[1], params["pca"]).double().fit(flat)
        with torch.no_grad():
            z = pca(flat)
    labels = y.numpy()
    mixtures = fit_mixtures(
        z.numpy(), labels, n_classes=n_classes, n_components=params["n_components"],
        covariance=params["covariance"], reg=float(params["reg"]),
        max_iter=params["max_iter"], n_init=params["n_init"], seed=seed, progress=progress)
    log_priors = np.log(np.bincount(labels, minlength=n_classes) / len(labels))
    # EM runs on the CPU; the module is returned there (float32) and moved by the caller.
    return GaussianMixtureClassifier.from_mixtures(
        mixtures, log_priors, list(x.shape[1:]), pca).float()


register(Family(
    name="gmm",
    defaults=DEFAULTS,
    choices={"covariance": COVARIANCES},
    # pca's upper bound (min(n, D)) depends on the data: checked again at fit time
    rules={"n_components": integer(1), "max_iter": integer(1), "n_init": integer(1),
           "reg": number(0), "pca": integer(1, none=True)},
    fit=_fit,
    module=GaussianMixtureClassifier,
    doc="one Gaussian mixture per class (n_components, full/diag/spherical covariance, "
        "reg, optional pca front end), logits = log prior + log-likelihood",
))
