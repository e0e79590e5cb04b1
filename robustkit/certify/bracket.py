"""The truth between two bounds: certified accuracy below, attacked accuracy above.

Every robust accuracy an attack reports is an upper bound (the share of inputs it failed
to break); a certificate gives the lower bound (the share proven robust). ``bracket``
runs both on the same inputs and combines them per sample:

- ``certified``: no input of the eps-ball (and the [0, 1] box) changes the prediction;
- ``broken_by_certificate``: the certificate found a witness (verified on the model);
- ``broken_by_attack``: the attack found one (verified on the model), the certificate did not;
- ``unknown``: neither.

``certified_accuracy <= true robust accuracy <= upper`` (``upper`` counts every verified
witness, the attack's and the certificate's); ``exact_share`` is the share of inputs
decided either way, and ``upper - certified_accuracy == 1 - exact_share``.

A sample certified robust that the attack breaks is a bug of the certificate: ``bracket``
raises ``CertificateContradiction`` naming it (never for smoothed methods, which certify
the smoothed classifier, another model than the one attacked).
"""
from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from robustkit import attacks
from robustkit.attacks import AttackSpec
from robustkit.attacks.base import eval_mode
from robustkit.certify import certify, get
from robustkit.certify.base import (
    CertifyResult,
    check_against_attack,
    check_eps,
    check_norm,
    verify_witness,
)

STATUSES = ("certified", "broken_by_certificate", "broken_by_attack", "unknown")
NO_ATTACK = "none"
SMOOTHED_NOTE = ("certifies the smoothed classifier (Gaussian noise, Cohen et al. 2019), "
                 "not the model itself; the attacked bound is the model's")


@dataclass(frozen=True, eq=False)
class Bracket:
    """Certificate and attack on the same inputs at one eps.

    Attributes:
        eps, norm: the ball (intersected with [0, 1]).
        certificate: the certificate's per-sample result.
        attack: the attack's registry name (``"none"`` when no attack ran).
        attack_broken: bool (N,): the attack's x_adv is a verified witness.
        attack_seconds: time of the attack (an eps-grid attack's whole run, on every eps).
        smoothed: the certificate is about the smoothed classifier, not the model.
    """

    eps: float
    norm: str
    certificate: CertifyResult
    attack: str
    attack_broken: torch.Tensor
    attack_seconds: float
    smoothed: bool = False

    @property
    def method(self) -> str:
        return self.certificate.method

    @property
    def n(self) -> int:
        return len(self.attack_broken)

    @property
    def certified(self) -> torch.Tensor:
        return self.certificate.certified.cpu()

    @property
    def broken(self) -> torch.Tensor:
        """bool (N,): a verified witness exists (certificate's or attack's)."""
        return self.certificate.broken.cpu() | self.attack_broken

    @property
    def status(self) -> list[str]:
        """One of ``STATUSES`` per sample (a certificate's witness wins over an attack's)."""
        cert, by_cert = self.certified.tolist(), self.certificate.broken.cpu().tolist()
        return [STATUSES[0] if c else STATUSES[1] if b else STATUSES[2] if a else STATUSES[3]
                for c, b, a in zip(cert, by_cert, self.attack_broken.tolist())]

    @property
    def certified_accuracy(self) -> float:
        return self.certificate.certified_accuracy

    @property
    def attacked_accuracy(self) -> float:
        """Share of inputs the attack alone failed to break (NaN without an attack)."""
        if self.attack == NO_ATTACK or not self.n:
            return math.nan
        return share(~self.attack_broken)

    @property
    def upper(self) -> float:
        """The upper end of the bracket: share of inputs without any verified witness (for
        a smoothed certificate, the attacked accuracy of the model)."""
        if self.smoothed:
            return self.attacked_accuracy
        return share(~self.broken)

    @property
    def exact_share(self) -> float:
        """Share of inputs decided (certified or broken); NaN for a smoothed certificate,
        which decides nothing about the model."""
        if self.smoothed or not self.n:
            return math.nan
        return share(self.certified | self.broken)

    @property
    def certify_seconds(self) -> float:
        return float(self.certificate.seconds.sum())

    def counts(self) -> dict[str, int]:
        """How many samples have each status."""
        status = self.status
        return {s: status.count(s) for s in STATUSES}

    def row(self) -> dict[str, Any]:
        """The numbers a table shows for this eps."""
        return {"eps": self.eps, "norm": self.norm, "n": self.n, "method": self.method,
                "smoothed": self.smoothed, "attack": self.attack,
                "certified_accuracy": self.certified_accuracy,
                "attacked_accuracy": self.attacked_accuracy, "upper": self.upper,
                "exact_share": self.exact_share, **self.counts(),
                "certify_seconds": self.certify_seconds, "attack_seconds": self.attack_seconds}


def share(mask: torch.Tensor) -> float:
    """Share of True in ``mask`` as count / n (so that equal counts give equal floats)."""
    return int(mask.sum()) / len(mask) if len(mask) else math.nan


def bracket(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
            eps: float | Sequence[float], norm: str = "linf", attack: str = "autoattack",
            method: str = "auto", time_limit: float = 30.0,
            attack_params: Mapping[str, Any] | None = None, batch_size: int = 1024,
            seed: int = 0, **params: Any) -> list[Bracket]:
    """Certify and attack (x, y) at each eps; check that they agree; one Bracket per eps.

    Args:
        model: a classifier returning logits (N, K); not changed.
        x: inputs (N, ...) in [0, 1] on the model's device. y: int64 (N,) labels.
        eps: one radius or a list (the certificate and an eps-grid attack run once).
        norm: ``"linf"`` or ``"l2"``, for both the certificate and the attack.
        attack: a fixed-budget attack's registry name, or ``"none"`` (certificate only).
        method: a certificate name or ``"auto"`` (see ``robustkit.certify.certify``).
        time_limit: seconds per sample for certificates that search.
        attack_params: the attack's hyperparameters (its norm is set from ``norm``).
        batch_size: samples per attack call. seed: the attack's base seed.
        **params: the certificate's parameters.

    Returns:
        One ``Bracket`` per eps, in order.

    Raises:
        CertificateContradiction: a sample certified robust is misclassified or broken by
            the attack (checked for certificates of the model itself, not smoothed ones).
        RuntimeError: a certificate's witness is not adversarial on the model.

    Example:
        >>> from robustkit import load_dataset, models
        >>> model, _ = models.train("linear", "digits", epochs=5)
        >>> x, y, _ = load_dataset("digits", "test", limit=50)
        >>> (b,) = bracket(model, x, y, eps=0.05)  # doctest: +SKIP
        >>> b.certified_accuracy <= b.upper  # doctest: +SKIP
        True
    """
    eps_t = check_eps(eps)
    check_norm(norm)
    spec = None if attack == NO_ATTACK else check_attack(attack, norm, attack_params or {})
    with eval_mode(model):
        results = cast("list[CertifyResult]", certify(
            model, x, y, eps=list(eps_t), norm=norm, method=method, time_limit=time_limit,
            **params))  # an eps list gives a list
        smoothed = results[0].method != "none" and get(results[0].method).smoothed
        found: Sequence[tuple[torch.Tensor, torch.Tensor | None]] = \
            [(torch.zeros(len(x), dtype=torch.bool), None)] * len(eps_t)
        seconds = 0.0
        if spec is not None:
            found, seconds = _run_attack(spec, model, x, y, eps_t, norm,
                                         dict(attack_params or {}), batch_size, seed)
        out = []
        for res, (broken, x_adv) in zip(results, found):
            if not smoothed:
                check_result(res, model, x, y)
                if x_adv is not None:
                    check_against_attack(res, broken, x_adv, model=model, x=x, y=y,
                                         what=f"attack {attack!r}")
            out.append(Bracket(res.eps, norm, res, attack, broken.cpu(), seconds, smoothed))
    return out


def check_attack(name: str, norm: str, params: Mapping[str, Any]) -> AttackSpec:
    """The registry entry of attack ``name`` once it is known to be a fixed-budget attack in
    ``norm`` whose ``params`` are valid; else ValueError naming what is wrong."""
    spec = attacks.get(name)
    if spec.kind != "fixed":
        raise ValueError(f"attack={name!r} is a {spec.kind} attack; a bracket needs a "
                         f"fixed-budget one (autoattack, apgd, pgd, ...) or 'none'")
    own = params.get("norm", norm)
    takes_norm = "norm" in (spec.parameters() or ["norm"])
    if own != norm or (not takes_norm and spec.norm != norm):
        raise ValueError(f"attack={name!r} attacks in {own if takes_norm else spec.norm}, "
                         f"the certificate in norm={norm!r}: they must be the same ball")
    found = spec.check({**params, **({"norm": norm} if takes_norm else {})})
    if found:
        raise ValueError("; ".join(found))
    return spec


def _run_attack(spec: AttackSpec, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                eps: tuple[float, ...], norm: str, params: dict[str, Any], batch_size: int,
                seed: int) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], float]:
    """Per eps: (verified witness found, x_adv), and the seconds of the whole run."""
    if "norm" in (spec.parameters() or ["norm"]):
        params["norm"] = norm
    t0 = time.perf_counter()
    parts: list[list[torch.Tensor]] = [[] for _ in eps]
    for s in range(0, len(x), batch_size):
        xb, yb = x[s:s + batch_size], y[s:s + batch_size]
        if spec.curve is not None and len(eps) > 1:
            res = spec.curve(model, xb, yb, eps=list(eps), seed=seed + s, **params)
        else:
            res = [spec.fn(model, xb, yb, eps=e, seed=seed + s, **params) for e in eps]
        for part, r in zip(parts, res):
            part.append(r.x_adv.detach())
    seconds = time.perf_counter() - t0
    out = []
    for e, part in zip(eps, parts):
        x_adv = torch.cat(part)
        out.append((verify_witness(model, x, y, x_adv, e, norm).cpu(), x_adv))
    return out, seconds


def check_result(res: CertifyResult, model: nn.Module, x: torch.Tensor, y: torch.Tensor
                 ) -> None:
    """The run-time checks of a certificate on its own: a certified sample is classified
    correctly (``CertificateContradiction`` otherwise), and every witness is adversarial on
    the model (RuntimeError otherwise). Not for smoothed certificates."""
    with torch.no_grad():
        wrong = model(x).argmax(1) != y
    check_against_attack(res, wrong, what="the clean input itself (it is misclassified)")
    if bool(res.broken.any()):
        real = verify_witness(model, x, y, res.x_adv, res.eps, res.norm)
        fake = res.broken & ~real
        if bool(fake.any()):
            idx = fake.nonzero().flatten().tolist()
            raise RuntimeError(f"certificate {res.method!r} marked samples {idx[:20]} broken "
                               f"at eps={res.eps} ({res.norm}) with witnesses that are not "
                               f"adversarial on the model (outside the ball or the box, or "
                               f"classified correctly)")
