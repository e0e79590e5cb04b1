"""APGD-T: targeted-DLR APGD toward each of the top runner-up classes, each on the samples
no earlier target has broken (AutoAttack's second attack); the targets after the first run
batched (:mod:`robustkit.attacks.targets`)."""
from __future__ import annotations

import math

import torch
from torch import nn

from robustkit.attacks.apgd import run_apgd
from robustkit.attacks.apgd_common import check_params, resolve_loss
from robustkit.attacks.base import (
    AttackResult,
    check_inputs,
    eval_mode,
    make_result,
    register,
)
from robustkit.attacks.rng import sample_rng
from robustkit.attacks.targets import RANKS, linearized_order, pairs, row_budget, run_batches
from robustkit.params import choice, integer, number


@register("apgd_t", norm="linf", rules={"norm": choice("linf", "l2"),
                                        "targets": integer(1),
                                        "steps": integer(1),
                                        "restarts": integer(1),
                                        "rho": number(0, 1, open_low=True),
                                        "eot": integer(1),
                                        "rank": choice(*RANKS)})
def apgd_t(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
           norm: str = "linf", targets: int = 9, steps: int = 100, restarts: int = 1,
           rho: float = 0.75, eot: int = 1, rank: str = "logit", seed: int = 0,
           sample_ids: torch.Tensor | None = None) -> AttackResult:
    """Untargeted attack by targeted APGD on the targeted DLR loss, one target at a time.

    Targets are the runner-up classes of the clean logits, most likely first: the second
    largest logit, then the third, ... (``targets`` of them, at most K - 1); with
    ``rank="linearized"`` the classes whose boundary with y is closest in the linearization
    at x (:func:`robustkit.attacks.targets.linearized_distance`, MALT's ranking: K - 1
    more backward passes per sample, and on more than 10 classes better targets than the
    top logits). Each target's
    run starts from a fresh random point on the samples still classified correctly; a
    sample keeps its first misclassified point, else its point of highest targeted DLR
    over all targets. With K < 4 classes the targeted DLR is undefined and the targeted
    margin z_t - max_{j != t} z_j replaces it (``info["loss_fallback"] = "margin"``).

    Args:
        model: classifier returning logits (N, K); left unchanged.
        x: inputs (N, ...) in [0, 1].
        y: int64 (N,) true labels.
        eps: budget (>= 0) in ``norm``; ``eps=0`` returns x bitwise.
        norm: ``"linf"`` or ``"l2"``.
        targets: runner-up classes to try (>= 1; capped at K - 1).
        steps, restarts, rho, eot, seed: as for :func:`robustkit.attacks.apgd.apgd`, per
            target.
        rank: ``"logit"`` (AutoAttack's order) or ``"linearized"`` (above).

    Returns:
        AttackResult with success = misclassified; ``info["target"]`` is the class whose
        run broke each sample (-1 where none did), ``info["targets"]`` the count tried.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 5))
        >>> x, y = torch.rand(5, 4), torch.zeros(5, dtype=torch.long)
        >>> float(apgd_t(model, x, y, eps=0.1, steps=5, targets=2).linf.max()) <= 0.1 + 1e-6
        True

    Reference: Croce & Hein, "Reliable evaluation of adversarial robustness with an
    ensemble of diverse parameter-free attacks", ICML 2020 (arXiv:2003.01690).
    """
    check_inputs(model, x, y, eps=eps)
    check_params(norm, "dlr", steps, restarts, rho, eot)
    if not isinstance(targets, int) or isinstance(targets, bool) or targets < 1:
        raise ValueError(f"targets must be an integer >= 1, got {targets!r}")
    if rank not in RANKS:
        raise ValueError(f"rank must be one of {RANKS}, got {rank!r}")
    if eps == 0:
        return make_result(model, x, x.clone(), y, iterations=0)
    x, gen = x.detach(), sample_rng(seed, x, sample_ids, "apgd")
    n = len(x)
    with eval_mode(model):
        with torch.no_grad():
            clean = model(x)
        k = clean.shape[1]
        loss, info = resolve_loss("dlr", k, targeted=True)
        done = clean.argmax(1) != y
        tried = min(targets, k - 1)
        top = clean.argsort(dim=1, descending=True)[:, 1:]
        if rank == "linearized":
            top = linearized_order(model, x, y, norm, ~done, top)
        top = top[:, :tried]
        x_adv, best = x.clone(), torch.full((n,), -math.inf, device=x.device, dtype=x.dtype)
        iters = torch.zeros(n, dtype=torch.long, device=x.device)
        broke_for = torch.full((n,), -1, dtype=torch.long, device=x.device)
        evaluated = n

        def run(ranks: list[int]) -> None:
            nonlocal evaluated
            for _ in range(restarts):
                rows = (~done).nonzero().squeeze(1)
                if not len(rows):
                    break
                sample, row_rank = pairs(rows, ranks)
                t = top[sample, row_rank - 1]
                xa, ok, f, it, ev = run_apgd(model, x[sample], y[sample], eps=eps, norm=norm,
                                             loss=loss, steps=steps, rho=rho,
                                             gen=gen.take(sample, row_rank - 1),
                                             target=t, eot=eot, group=sample)
                iters.index_add_(0, sample, it)
                evaluated += ev
                for j in ranks:  # in rank order: a sample keeps its first target's break
                    sel = row_rank == j
                    i, okj, fj = sample[sel], ok[sel], f[sel]
                    free = ~done[i]
                    better = free & (okj | (fj > best[i]))
                    x_adv[i[better]], best[i[better]] = xa[sel][better], fj[better]
                    hit = free & okj
                    done[i[hit]], broke_for[i[hit]] = True, t[sel][hit]

        run_batches(list(range(1, tried + 1)), lambda: int((~done).sum()),
                    math.prod(x.shape[1:]), run, row_budget(x.device))
    info.update(loss=loss, target=broke_for, targets=tried, evaluations=evaluated, rank=rank)
    return make_result(model, x, x_adv, y, iterations=iters, info=info)
