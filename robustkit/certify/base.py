"""What every certificate shares: the result type, the registry entry, witness checks.

A certificate method is a plain function
``method(model, x, y, *, eps: tuple[float, ...], norm, time_limit, **params)
-> list[CertifyResult]`` (one result per eps, in the order given) that decides, per
sample, whether an adversarial example exists inside the eps-ball intersected with the
[0, 1] box. It never changes the model.

Soundness is the whole point: ``certified`` must only be set where *no* input of the ball
and the box changes the prediction away from ``y``; a sample certified robust that any
attack breaks is a bug (``check_against_attack`` raises ``CertificateContradiction``).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from robustkit.registry import Registry

NORMS = ("linf", "l2")
STATUSES = ("certified", "broken", "unknown")


class CertificateContradiction(RuntimeError):
    """A sample certified robust was broken by an attack: the certificate is unsound."""


@dataclass(frozen=True, eq=False)
class CertifyResult:
    """Per-sample outcome of a certificate at one eps.

    Attributes:
        eps: the radius certified (in the norm ``norm``), the ball is intersected with [0, 1].
        norm: ``"linf"`` or ``"l2"``.
        certified: bool (N,): no input of the ball (and box) is classified other than y.
        broken: bool (N,): ``x_adv`` is a verified witness (inside the ball and the box,
            predicted != y). A clean-misclassified sample is broken with ``x_adv = x``.
            ``certified & broken`` is never true; neither set means ``unknown``.
        x_adv: witnesses where ``broken`` (x elsewhere), same shape/dtype/device as x.
        radius: float (N,): a sound lower bound of the minimal adversarial distance
            (0 for misclassified samples, NaN where the method gives none).
        seconds: float (N,): time spent per sample (a batched method splits its time evenly).
        method: registry name of the method that produced the result.
        reasons: per-sample reason for ``unknown`` (empty string where decided).
        info: method-specific extras (e.g. unstable-neuron counts, bound gaps).
    """

    eps: float
    norm: str
    certified: torch.Tensor
    broken: torch.Tensor
    x_adv: torch.Tensor
    radius: torch.Tensor
    seconds: torch.Tensor
    method: str
    reasons: tuple[str, ...] = ()
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        both = self.certified & self.broken
        if bool(both.any()):
            idx = both.nonzero().flatten().tolist()
            raise CertificateContradiction(
                f"{self.method}: samples {idx[:10]} are both certified and broken at eps={self.eps}")

    @property
    def unknown(self) -> torch.Tensor:
        return ~(self.certified | self.broken)

    @property
    def status(self) -> list[str]:
        """``"certified"``, ``"broken"`` or ``"unknown"`` per sample."""
        return ["certified" if c else "broken" if b else "unknown"
                for c, b in zip(self.certified.tolist(), self.broken.tolist())]

    @property
    def certified_accuracy(self) -> float:
        """Share of all inputs certified (clean-misclassified inputs count as not robust,
        as in robust accuracy)."""
        n = len(self.certified)
        return float(self.certified.sum()) / n if n else float("nan")

    @property
    def decided_share(self) -> float:
        """Share of inputs the certificate decided by itself (certified or broken)."""
        n = len(self.certified)
        return float((self.certified | self.broken).sum()) / n if n else float("nan")


@dataclass(frozen=True)
class CertifySpec:
    """Registry entry of a certificate method.

    ``applies(model, norm)`` returns None when the method can certify ``model`` in ``norm``,
    else a one-line reason why not; ``method="auto"`` tries the registered methods in
    ascending ``priority`` and takes the first that applies. ``exact`` says whether the
    method is complete (decides every sample given time); ``smoothed`` marks methods that
    certify a smoothed classifier rather than the model itself (randomized smoothing).
    """

    name: str
    fn: Callable[..., list[CertifyResult]]
    applies: Callable[[nn.Module, str], str | None]
    priority: int = 100
    exact: bool = False
    smoothed: bool = False
    doc: str = ""


CERTIFIERS: Registry[CertifySpec] = Registry("certificate")


def register(name: str, *, applies: Callable[[nn.Module, str], str | None], priority: int = 100,
             exact: bool = False, smoothed: bool = False) -> Callable:
    """Register a certificate method under ``name`` (decorator)."""

    def deco(fn: Callable[..., list[CertifyResult]]) -> Callable[..., list[CertifyResult]]:
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        CERTIFIERS.add(name, CertifySpec(name, fn, applies, priority, exact, smoothed, doc))
        return fn

    return deco


def undecided(x: torch.Tensor, eps: float, norm: str, method: str, reason: str,
              seconds: float = 0.0) -> CertifyResult:
    """A result that decides nothing: every sample ``unknown`` with ``reason``."""
    n = len(x)
    none = torch.zeros(n, dtype=torch.bool, device=x.device)
    return CertifyResult(eps=eps, norm=norm, certified=none, broken=none.clone(), x_adv=x,
                         radius=torch.full((n,), float("nan"), dtype=torch.float64),
                         seconds=torch.full((n,), seconds / max(n, 1), dtype=torch.float64),
                         method=method, reasons=(reason,) * n)


def check_eps(eps: float | Sequence[float]) -> tuple[float, ...]:
    """eps as a tuple of finite non-negative floats (a single float becomes a 1-tuple)."""
    values = (eps,) if isinstance(eps, (int, float)) else tuple(eps)
    if not values:
        raise ValueError("eps: expected a number or a non-empty list of numbers")
    for e in values:
        if not isinstance(e, (int, float)) or isinstance(e, bool) or not (e >= 0) \
                or e == float("inf"):
            raise ValueError(f"eps={e!r} is not valid: expected a finite number >= 0")
    return tuple(float(e) for e in values)


def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r} is not valid; valid: {', '.join(NORMS)}")
    return norm


def in_ball(x: torch.Tensor, x_adv: torch.Tensor, eps: float, norm: str,
            tol: float = 1e-6) -> torch.Tensor:
    """bool (N,): x_adv lies in the eps-ball around x (up to ``tol``) and in [0, 1]."""
    d = (x_adv - x).flatten(1).double()
    dist = d.abs().amax(dim=1) if norm == "linf" else torch.linalg.vector_norm(d, dim=1)
    flat = x_adv.flatten(1)
    box = (flat >= 0).all(dim=1) & (flat <= 1).all(dim=1)
    return (dist <= eps + tol) & box


@torch.no_grad()
def verify_witness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor,
                   eps: float, norm: str) -> torch.Tensor:
    """bool (N,): x_adv is a real adversarial example of ``model`` at eps (inside the
    ball and the box, predicted != y), checked by a forward pass of the model itself."""
    pred = model(x_adv).argmax(dim=1)
    return in_ball(x, x_adv, eps, norm) & (pred != y)


def check_against_attack(result: CertifyResult, attack_success: torch.Tensor,
                         attack_x_adv: torch.Tensor | None = None, *,
                         model: nn.Module | None = None, x: torch.Tensor | None = None,
                         y: torch.Tensor | None = None, what: str = "attack") -> None:
    """Raise ``CertificateContradiction`` naming the samples certified robust that an
    attack broke at the same eps (the attack's success is re-verified on the model when
    ``model``, ``x``, ``y`` and ``attack_x_adv`` are given, so that an attack's own
    bookkeeping error is not blamed on the certificate). Results of smoothed methods
    (randomized smoothing) are skipped: they certify another classifier than the model."""
    if result.method in CERTIFIERS and CERTIFIERS.get(result.method).smoothed:
        return  # it certified the smoothed classifier g; the attack ran on the model f
    success = attack_success.to(result.certified.device).bool()
    if attack_x_adv is not None and model is not None and x is not None and y is not None:
        success = success & verify_witness(model, x, y, attack_x_adv, result.eps, result.norm)
    bad = result.certified & success
    if bool(bad.any()):
        idx = bad.nonzero().flatten().tolist()
        raise CertificateContradiction(
            f"certificate {result.method!r} certified samples {idx[:20]} at eps={result.eps} "
            f"({result.norm}) but {what} broke them: the certificate is unsound")
