"""AutoAttack against a defended system: the strongest adaptive attack robustkit has.

An ensemble in AutoAttack's manner (per sample, the first member that breaks the system
wins): adaptive PGD (:func:`~robustkit.defenses.adaptive.adaptive_pgd`, the detector as
a penalty, ``steps`` steps per lambda) first, then the chain of :mod:`robustkit.attacks.autoattack` (APGD-CE, APGD-T, FAB-T, Square) runs on
:class:`SystemLogits`, a module whose argmax is the system's decision: white-box attacks
differentiate through the branch the detector picks (rectified or direct), and a detector
that rejects adds a "rejected" class whose logit crosses the top class's exactly where the
detector's logit crosses its threshold, so that the targeted attacks must evade it; Square
sees the same outputs and nothing else. Adaptive PGD leads because the chain alone is
weak against a rejecting detector: its targeted losses compare the target's logit with
the true class's only, so they never see the rejected class. A sample counts as broken only when the system's
own decision is wrong and not a rejection; an attack that ends on a rejection leaves the
sample to the next attack of the chain. The untargeted attacks of the chain count any
label but y as success, the rejected class included, so they may stop on a rejection:
the samples the chain leaves defended then meet the same chain against the bare
classifier (a detector that misses those points does not stop them). Measured on an MLP
behind a 5-epoch detector, 80 digits at eps 0.2: system accuracy 0.49 after the chain on
:class:`SystemLogits` alone, 0.29 after the chain on the bare classifier alone.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustkit.attacks.autoattack import chain
from robustkit.attacks.base import check_inputs
from robustkit.defenses.adaptive import adaptive_pgd
from robustkit.defenses.system import REJECT, DefendedSystem


class SystemLogits(nn.Module):
    """Logits whose argmax is ``system.decide``: (N, K) for a system that never rejects
    (the branch the detector picks), (N, K + 1) for one that rejects (class K =
    rejected, logit = top logit + detector logit - threshold).

    Example:
        >>> logits = SystemLogits(system)(x)  # doctest: +SKIP
        >>> bool((logits.argmax(1) == system.decide(x)).all())  # doctest: +SKIP
        True
    """

    def __init__(self, system: DefendedSystem) -> None:
        super().__init__()
        self.system = system
        # Registered submodules, so that eval_mode and devices reach them.
        self.parts = nn.ModuleList(m for m in (system.model, system.detector,
                                               system.rectifier) if m is not None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        direct, rect, det = self.system.paths(x)
        if det is None:
            return rect if rect is not None else direct
        flagged = (det > self.system.threshold).unsqueeze(1)
        if rect is not None:
            return torch.where(flagged, rect, direct)
        top = direct.max(1, keepdim=True).values
        return torch.cat([direct, top + (det - self.system.threshold).unsqueeze(1)], 1)


def adaptive_autoattack(system: DefendedSystem, x: torch.Tensor, y: torch.Tensor, *,
                        eps: float, norm: str = "linf", version: str = "standard",
                        steps: int = 100, targets: int = 9, queries: int = 5000,
                        seed: int = 0) -> tuple[torch.Tensor, dict[str, Any]]:
    """Adaptive PGD, then AutoAttack's chain against the whole system, each attack on the
    samples the earlier ones left defended; then the chain against the bare classifier on
    what is left (``info["counts"]`` names those ``"<attack>:bare"``).

    Args:
        system: the classifier behind its detector and/or rectifier (nothing changes).
        x: inputs (N, ...) in [0, 1]; y: int64 (N,) labels.
        eps, norm, version, steps, targets, queries, seed: as for
            ``robustkit.attacks.autoattack.autoattack``.

    Returns:
        ``(x_adv, info)``: x_adv holds each sample's break, else the last attack's point
        (every attacked input is a positive for the detection ROC); ``info["counts"]``
        the breaks per attack, ``info["broken_by"]`` per sample ("" when defended).

    Example:
        >>> x_adv, info = adaptive_autoattack(system, x, y, eps=0.1)  # doctest: +SKIP

    Reference: Croce & Hein, ICML 2020 (arXiv:2003.01690); Carlini & Wagner, AISec 2017
    (arXiv:1705.07263), the detector as one more class; Tramer et al., "On Adaptive
    Attacks to Adversarial Example Defenses", NeurIPS 2020 (arXiv:2002.08347).
    """
    check_inputs(system.model, x, y, eps=eps)
    surrogate = SystemLogits(system)
    attacks, skipped = chain(version, norm, steps=steps, targets=targets, queries=queries,
                             eot=20)
    x = x.detach()
    dec = system.decide(x).to(y.device)
    broken = (dec != y) & (dec != REJECT)
    by = ["clean" if b else "" for b in broken.tolist()]
    x_adv, counts = x.clone(), {}
    if eps > 0 and system.detector is not None:
        lead = adaptive_pgd(system, x, y, eps=eps, norm=norm, steps=steps, seed=seed)
        hit = lead.success.to(y.device) & ~broken
        # A sample the system already gets wrong on x keeps x, as in AutoAttack.
        x_adv = torch.where(broken.view(-1, *[1] * (x.dim() - 1)), x, lead.x_adv.detach())
        broken = broken | hit
        for i in hit.nonzero().squeeze(1).tolist():
            by[i] = "adaptive_pgd"
        counts["adaptive_pgd"] = int(hit.sum())
    for target, suffix in ((surrogate, ""), (system.model, ":bare")):
        for name, attack in attacks:
            rows = (~broken).nonzero().squeeze(1)
            counts[name + suffix] = 0
            if not len(rows) or eps == 0:
                continue
            res = attack(target, x[rows], y[rows], eps=eps, seed=seed)
            got = system.decide(res.x_adv).to(y.device)
            hit = (got != y[rows]) & (got != REJECT)
            if not suffix or bool(hit.any()):  # a bare-classifier point replaces only on a break
                keep = hit if suffix else torch.ones_like(hit)
                x_adv[rows[keep]] = res.x_adv.detach()[keep]
            broken[rows[hit]] = True
            for i in rows[hit].tolist():
                by[i] = name + suffix
            counts[name + suffix] = int(hit.sum())
    return x_adv, {"counts": counts, "broken_by": by, "skipped": skipped}
