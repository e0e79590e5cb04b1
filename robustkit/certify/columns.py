"""Certificate columns for ``robustkit.evaluate`` rows (``evaluate(..., certify=...)``).

Each row gains ``certified_accuracy`` (share of inputs certified), ``exact_share`` (share
decided: certified, or broken by the certificate's or the row's attack's verified
witness), ``certify_method`` and ``certify_seconds`` (``certify_method`` "none" and empty numbers where no certificate
applies to the model). The row's own robust accuracy stays
the attack's; the bracket's upper end counting every witness is
``certified_accuracy + 1 - exact_share``. The attack's predictions are checked against
the certificate: a certified sample that the attack broke inside the ball raises
``CertificateContradiction`` naming it (not for smoothed certificates).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from torch import nn

from robustkit.certify import certify, get, names
from robustkit.certify.base import CertifyResult, check_against_attack
from robustkit.certify.bracket import check_result, share

COLUMNS = ("certified_accuracy", "exact_share", "certify_method", "certify_seconds")
OPTIONS = ("method", "time_limit", "params")
# A delta this much beyond eps (float32 rounding of x_adv - x) still counts as inside.
BALL_TOL = 1e-6


def certify_options(value: bool | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``certify=`` of ``evaluate`` as options (None: no certificate): ``True`` means
    ``{"method": "auto"}``; a mapping may set ``method``, ``time_limit`` (seconds per
    sample, > 0) and ``params`` (the certificate's parameters). A bad one raises ValueError
    (TypeError for a wrong type) naming it.

    Example:
        >>> certify_options({"time_limit": 5})
        {'method': 'auto', 'time_limit': 5.0, 'params': {}}
    """
    if value is None or value is False:
        return None
    if value is True:
        value = {}
    if not isinstance(value, Mapping):
        raise TypeError(f"certify={value!r} is not valid: expected True, False, None or a "
                         f"mapping with keys {', '.join(OPTIONS)}")
    unknown = sorted(set(value) - set(OPTIONS))
    if unknown:
        raise ValueError(f"certify: unknown key(s) {unknown}; valid: {', '.join(OPTIONS)}")
    method = value.get("method", "auto")
    if not isinstance(method, str) or (method != "auto" and method not in names()):
        raise ValueError(f"certify.method={method!r} is not valid; valid: auto, "
                         f"{', '.join(names())}")
    limit = value.get("time_limit", 30.0)
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not 0 < limit < math.inf:
        raise ValueError(f"certify.time_limit={limit!r} is not valid: expected seconds > 0")
    params = value.get("params", {})
    if not isinstance(params, Mapping):
        raise TypeError(f"certify.params={params!r} is not valid: expected a mapping")
    return {"method": method, "time_limit": float(limit), "params": dict(params)}


def with_certificates(rows: Sequence[dict[str, Any]], model: nn.Module, x: torch.Tensor,
                      y: torch.Tensor, *, norm: str, preds: Sequence[torch.Tensor],
                      dists: Sequence[torch.Tensor], options: Mapping[str, Any],
                      attack: str) -> list[dict[str, Any]]:
    """``rows`` (one per eps, from ``evaluate``) with the certificate columns added.

    Args:
        rows: evaluation rows, each with its ``eps``.
        model: the evaluated model (eval mode, on x's device). x, y: the evaluated data.
        norm: the norm of the attack's ball, certified in the same norm.
        preds: per row, int64 (N,) predictions on the attack's x_adv (CPU).
        dists: per row, float (N,) the applied delta's size in ``norm`` (CPU).
        options: ``certify_options``' result. attack: the attack's name (in messages).
    """
    eps = [float(r["eps"]) for r in rows]
    results = cast("list[CertifyResult]", certify(
        model, x, y, eps=eps, norm=norm, method=options["method"],
        time_limit=options["time_limit"], **options["params"]))
    out = []
    for row, res, pred, dist in zip(rows, results, preds, dists):
        smoothed = res.method != "none" and get(res.method).smoothed
        yc = y.cpu()
        broken = ((pred != yc) & (dist.double() <= res.eps + BALL_TOL)).to(res.certified.device)
        if not smoothed:
            check_result(res, model, x, y)
            check_against_attack(res, broken, what=f"attack {attack!r} (its x_adv, predicted "
                                                   f"by the model inside the ball)")
        decided = res.certified | res.broken | broken
        # no certificate applies ("none"): no numbers, so that no bracket [0, attacked] is shown
        none = res.method == "none"
        out.append({**row, "certified_accuracy": math.nan if none else res.certified_accuracy,
                    "exact_share": math.nan if smoothed or none
                    else share(decided.cpu()),
                    "certify_method": res.method,
                    "certify_seconds": float(res.seconds.sum())})
    return out
