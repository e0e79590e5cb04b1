"""A perturbation detector (clean vs perturbed) in the raw or the DCT domain, alone or on
the residual x - R(x) of a perturbation rectifying network (Akhtar et al.'s detector).

The detector is an ``nn.Module`` returning one logit per sample (positive = perturbed),
differentiable end to end so that adaptive attacks can use it, with a ``threshold``
buffer calibrated to a 5% false-positive rate on held-out clean inputs.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustkit.attacks.base import generator
from robustkit.attacks.fgsm import fgm, fgsm
from robustkit.attacks.noise import noise
from robustkit.defenses.base import descend
from robustkit.defenses.dct import dct, dct2
from robustkit.defenses.pool import check_counts, check_range, perturb_with, uap_pool
from robustkit.defenses.rectifier import Rectifier
from robustkit.models.preprocess import Standardize
from robustkit.models.registry import model_device
from robustkit.models.training import seeded

FEATURES = ("dct", "raw")
POSITIVES = ("uap", "fgsm", "noise")
NEGATIVES = ("clean", "noise")


class Detector(nn.Module):
    """features(x or x - R(x)) -> standardize -> small CNN ("raw" images) or MLP -> logit.

    ``features="dct"`` takes log(|DCT-II| + log_floor) per channel (2-D for images, 1-D
    for flat inputs): universal perturbations put energy into coefficients that clean
    inputs leave near zero, and the log scale makes that visible. ``features="raw"``
    passes the input (or residual) unchanged. With a ``rectifier`` the detector looks at
    the residual x - R(x), as in Akhtar et al.; the rectifier is a frozen submodule.
    """

    threshold: torch.Tensor

    def __init__(self, input_shape: Sequence[int], features: str = "dct",
                 hidden: Sequence[int] = (64,), channels: Sequence[int] = (16, 32),
                 rectifier: Mapping[str, Any] | Rectifier | None = None,
                 log_floor: float = 1e-3) -> None:
        super().__init__()
        if features not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
        if isinstance(rectifier, Mapping):
            rectifier = Rectifier(**rectifier)
        self.rectifier = rectifier
        shape = [int(v) for v in input_shape]
        self.arch: dict[str, Any] = {"input_shape": shape, "features": features,
                     "hidden": [int(h) for h in hidden], "channels": [int(c) for c in channels],
                     "rectifier": rectifier.arch if rectifier is not None else None,
                     "log_floor": float(log_floor)}
        self.image = len(shape) == 3
        self.features, self.input_shape, self.log_floor = features, shape, float(log_floor)
        dim = math.prod(shape)
        self.standardize = Standardize(dim)
        self.register_buffer("threshold", torch.zeros(()))
        if features == "raw" and self.image:
            c1, c2 = self.arch["channels"]
            flat = c2 * math.ceil(shape[1] / 2) * math.ceil(shape[2] / 2)
            width = self.arch["hidden"][0] if self.arch["hidden"] else 64
            self.head: nn.Module = nn.Sequential(
                nn.Conv2d(shape[0], c1, 3, padding=1), nn.ReLU(),
                nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                nn.Linear(flat, width), nn.ReLU(), nn.Linear(width, 1))
        else:
            layers: list[nn.Module] = []
            for h in self.arch["hidden"]:
                layers += [nn.Linear(dim, h), nn.ReLU()]
                dim = h
            self.head = nn.Sequential(*layers, nn.Linear(dim, 1))

    def featurize(self, x: torch.Tensor) -> torch.Tensor:
        """Flat features (N, D) of x: of the residual x - R(x) when there is a rectifier."""
        z = x - self.rectifier(x) if self.rectifier is not None else x
        if self.features == "dct":
            coef = dct2(z) if self.image else dct(z.reshape(len(z), -1))
            z = torch.log(coef.abs() + self.log_floor)
        return z.reshape(len(z), -1)

    def score_features(self, f: torch.Tensor) -> torch.Tensor:
        """Logits (N,) of precomputed features (N, D)."""
        z = self.standardize(f)
        if self.features == "raw" and self.image:
            z = z.reshape(len(z), *self.input_shape)
        return self.head(z).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N,) for inputs x (N, ...) in [0, 1]; > threshold means "perturbed"."""
        return self.score_features(self.featurize(x))

    @torch.no_grad()
    def flag(self, x: torch.Tensor) -> torch.Tensor:
        """Bool (N,): the detector's logit exceeds its threshold."""
        return self(x) > self.threshold


def build_detector(arch: Mapping[str, Any]) -> Detector:
    """Rebuild an unfitted detector from its ``arch`` (``store.load(..., build=...)``)."""
    return Detector(**arch)


def fit_detector(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                 features: str = "dct", positives: Sequence[str] = ("uap", "fgsm"),
                 negatives: Sequence[str] = ("clean",), eps: tuple[float, float] = (0.1, 0.3),
                 norm: str = "linf", pool: torch.Tensor | None = None, n_uaps: int = 4,
                 n_synthetic: int = 8, rectifier: Rectifier | None = None,
                 hidden: Sequence[int] = (64,), channels: Sequence[int] = (16, 32),
                 epochs: int = 20, lr: float = 1e-3, batch_size: int = 128,
                 holdout: float = 0.2, fpr: float = 0.05, seed: int = 0,
                 uap_params: Mapping[str, Any] | None = None) -> Detector:
    """Train a clean-vs-perturbed detector for ``model`` and calibrate its threshold.

    A ``holdout`` share of x is set aside. Every remaining sample gives one negative
    (clean, or random noise if ``"noise"`` is among ``negatives``) and one positive: a
    perturbation by an attack drawn from ``positives`` at a radius from 5 levels spread
    over ``eps`` -- a universal perturbation from ``pool`` (real UAPs against the model
    plus synthetic ones, :func:`~robustkit.defenses.pool.uap_pool`), FGSM (FGM for
    L2) against the model, or random noise. The threshold is the (1 - fpr) quantile of
    the logits of the held-out clean inputs. A detector gives no guarantee against
    perturbations unlike its positives, nor against an attacker who knows it (score it
    with ``defenses.detection.detection_scores``, which runs adaptive attacks).

    Args:
        model: the classifier whose attacks are detected (left unchanged).
        x, y: (N, ...) inputs in [0, 1] and int64 labels.
        features: ``"dct"`` or ``"raw"``; see :class:`Detector`.
        rectifier: a trained PRN: the detector then looks at x - R(x).
        eps: (low, high) radii of the positives; norm: ``"linf"`` or ``"l2"``.

    Returns:
        The trained :class:`Detector` (eval mode, on the model's device).

    Example:
        >>> det = fit_detector(model, x, y, positives=("uap",))  # doctest: +SKIP
        >>> det.flag(x_test).float().mean()  # about fpr on clean inputs  # doctest: +SKIP

    Reference: Akhtar, Liu & Mian, "Defense against Universal Adversarial Perturbations",
    CVPR 2018 (arXiv:1711.05929).
    """
    lo, hi = _check_fit_args(features, positives, negatives, eps, norm, holdout, fpr)
    check_counts(epochs=epochs, batch_size=batch_size)
    gen = generator(seed, "cpu")
    order = torch.randperm(len(x), generator=gen)
    n_cal = max(1, round(holdout * len(x)))
    tr, cal = order[n_cal:], order[:n_cal]
    if "uap" in positives and pool is None:
        pool = uap_pool(model, x[tr], y[tr], xi=(lo, hi), norm=norm, n_uaps=n_uaps,
                        n_synthetic=n_synthetic, seed=seed, uap_params=uap_params)
    dev = model_device(model)
    xt, yt = x[tr].to(dev), y[tr].to(dev)
    levels = torch.linspace(lo, hi, 5).tolist()
    pos = _perturb(model, xt, yt, positives, levels, norm, pool, gen, seed)
    neg = _perturb(model, xt, yt, negatives, levels, norm, pool, gen, seed + 7)
    with seeded(seed):
        det = Detector(x.shape[1:], features, hidden, channels, rectifier).to(dev)
    with torch.no_grad():
        feats = torch.cat([_featurize(det, neg), _featurize(det, pos)])
    labels = torch.cat([torch.zeros(len(neg)), torch.ones(len(pos))]).to(dev)
    det.standardize.fit(feats)
    _train_head(det, feats, labels, epochs=epochs, lr=lr, batch_size=batch_size, gen=gen)
    with torch.no_grad():
        scores = det.score_features(_featurize(det, x[cal].to(dev)))
        det.threshold.fill_(float(torch.quantile(scores.double(), 1 - fpr,
                                                 interpolation="higher")))
    return det.eval()


def _perturb(model: nn.Module, x: torch.Tensor, y: torch.Tensor, kinds: Sequence[str],
             levels: list[float], norm: str, pool: torch.Tensor | None,
             gen: torch.Generator, seed: int) -> torch.Tensor:
    kind = torch.randint(len(kinds), (len(x),), generator=gen)
    level = torch.randint(len(levels), (len(x),), generator=gen)
    out = x.clone()
    for k, name in enumerate(kinds):
        if name == "uap" and pool is not None:
            m = (kind == k).to(x.device)
            out[m] = perturb_with(x[m], pool.to(x.device), gen)
            continue
        for j, e in enumerate(levels):
            m = ((kind == k) & (level == j)).to(x.device)
            if name == "clean" or not bool(m.any()):
                continue
            if name == "fgsm":
                attack = fgsm if norm == "linf" else fgm
                out[m] = attack(model, x[m], y[m], eps=e, predict=False).x_adv
            else:
                out[m] = noise(model, x[m], y[m], eps=e, norm=norm, seed=seed + j).x_adv
    return out


def _featurize(det: Detector, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    return torch.cat([det.featurize(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def _train_head(det: Detector, feats: torch.Tensor, labels: torch.Tensor, *, epochs: int,
                lr: float, batch_size: int, gen: torch.Generator) -> None:
    # Only the head learns: the rectifier (if any) is frozen, the features precomputed.
    params = list(det.head.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    det.head.train()
    for _ in range(epochs):
        order = torch.randperm(len(feats), generator=gen).to(feats.device)
        for i in range(0, len(feats), batch_size):
            idx = order[i:i + batch_size]
            loss = F.binary_cross_entropy_with_logits(det.score_features(feats[idx]),
                                                      labels[idx])
            descend(opt, params, loss)
    for p in params:
        p.grad = None
    det.head.eval()


def _check_fit_args(features: str, positives: Sequence[str], negatives: Sequence[str],
                    eps: Any, norm: str, holdout: float, fpr: float) -> tuple[float, float]:
    if features not in FEATURES:
        raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
    bad = [p for p in positives if p not in POSITIVES]
    if not positives or bad:
        raise ValueError(f"positives must be a non-empty subset of {POSITIVES}, "
                         f"got {tuple(positives)!r}")
    if "clean" not in negatives or any(n not in NEGATIVES for n in negatives):
        raise ValueError(f"negatives must include 'clean' and lie in {NEGATIVES}, "
                         f"got {tuple(negatives)!r}")
    if set(positives) & set(negatives):
        raise ValueError(f"an attack cannot be both positive and negative: "
                         f"{sorted(set(positives) & set(negatives))}")
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be in (0, 1), got {holdout!r}")
    if not 0 < fpr < 1:
        raise ValueError(f"fpr must be in (0, 1), got {fpr!r}")
    return check_range(eps, "eps", norm)
