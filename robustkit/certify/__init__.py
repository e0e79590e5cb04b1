"""Certificates: sound lower bounds on robust accuracy, beside the attacks' upper bounds.

``certify(model, x, y, eps=..., norm=..., method="auto")`` decides per sample whether an
adversarial example exists in the eps-ball (intersected with the [0, 1] box): certified,
broken (with a verified witness) or unknown. ``names()`` lists the methods, ``get(name)``
returns a ``CertifySpec``. Method modules register themselves when imported below.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from robustkit.certify import alpha as _alpha  # noqa: F401  (registers "alpha-crown")
from robustkit.certify import crown as _crown  # noqa: F401  (registers "crown", "ibp")
from robustkit.certify import gmm as _gmm  # noqa: F401  (registers "gmm")
from robustkit.certify import kernel as _kernel  # noqa: F401  (registers "kernel")
from robustkit.certify import linear as _linear  # noqa: F401  (registers "linear")
from robustkit.certify import lp as _lp  # noqa: F401  (registers "lp")
from robustkit.certify import milp as _milp  # noqa: F401  (registers "milp")
from robustkit.certify import smoothing as _smoothing  # noqa: F401  (registers "smoothing")
from robustkit.certify.base import (
    CERTIFIERS,
    CertificateContradiction,
    CertifyResult,
    CertifySpec,
    check_against_attack,
    check_eps,
    check_norm,
    register,
    undecided,
    verify_witness,
)


def names() -> list[str]:
    """Registered certificate methods."""
    return CERTIFIERS.names()


def get(name: str) -> CertifySpec:
    """The registry entry of certificate method ``name``."""
    return CERTIFIERS.get(name)


def choose(model: nn.Module, norm: str) -> tuple[CertifySpec | None, list[str]]:
    """The method ``method="auto"`` uses for ``model`` in ``norm`` (lowest priority number
    that applies; randomized smoothing is never chosen automatically, since it certifies a
    different classifier), and the reasons the others gave."""
    reasons: list[str] = []
    for spec in sorted((CERTIFIERS.get(n) for n in names()), key=lambda s: (s.priority, s.name)):
        if spec.smoothed:
            continue
        why = spec.applies(model, norm)
        if why is None:
            return spec, reasons
        reasons.append(f"{spec.name}: {why}")
    return None, reasons


def certify(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
            eps: float | Sequence[float], norm: str = "linf", method: str = "auto",
            time_limit: float = 30.0, **params: Any) -> CertifyResult | list[CertifyResult]:
    """Certify each sample of (x, y) at eps: certified, broken (with a witness) or unknown.

    Args:
        model: a classifier returning logits (N, n_classes); not changed.
        x: inputs in [0, 1], (N, ...). y: int64 (N,) labels.
        eps: one radius or a list (one call, one result per eps).
        norm: ``"linf"`` or ``"l2"``.
        method: a registered method name, or ``"auto"`` (the tightest that applies).
        time_limit: seconds per sample for methods that search (MILP, branch and bound);
            a sample not decided in time is ``unknown``.

    Returns:
        A ``CertifyResult`` for a single eps, a list of them for an eps list.
    """
    eps_t = check_eps(eps)
    check_norm(norm)
    if not isinstance(time_limit, (int, float)) or not time_limit > 0:
        raise ValueError(f"time_limit={time_limit!r} is not valid: expected seconds > 0")
    if method == "auto":
        spec, reasons = choose(model, norm)
        if spec is None:
            why = (f"no certificate applies to {type(model).__name__} in {norm}: "
                   + "; ".join(reasons))
            out = [undecided(x, e, norm, "none", why) for e in eps_t]
            return out[0] if isinstance(eps, (int, float)) else out
    else:
        spec = get(method)
        refusal = spec.applies(model, norm)
        if refusal is not None:
            raise ValueError(f"certificate {method!r} does not apply: {refusal}")
    results = spec.fn(model, x, y, eps=eps_t, norm=norm, time_limit=float(time_limit), **params)
    return results[0] if isinstance(eps, (int, float)) else results


__all__ = ["CertificateContradiction", "CertifyResult", "CertifySpec", "certify",
           "check_against_attack", "choose", "get", "names", "register", "verify_witness"]
