"""AutoAttack: APGD-CE, APGD-T, FAB-T and Square in sequence, each on the samples the earlier
ones left robust; per sample the first break wins. ``autoattack_curve`` runs an eps grid in
one pass: the largest eps first (what survives an eps is robust at every smaller one, what
breaks stays broken at every larger one), then the smaller eps by bisection.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from torch import nn

from robustkit.attacks.apgd import apgd
from robustkit.attacks.apgd_targeted import apgd_t
from robustkit.attacks.autoattack_lean import lean_chain
from robustkit.attacks.base import (
    NORMS,
    AttackResult,
    check_inputs,
    eval_mode,
    make_result,
    project,
    register,
)
from robustkit.attacks.rng import sample_rng
from robustkit.attacks.square import SQUARE_P_INIT, margin, square
from robustkit.attacks.variants import l2_variant
from robustkit.params import choice, integer
from robustkit.progress import status

VERSIONS = ("standard", "fast", "rand", "lean")
FAB_SLACK = 1e-6  # a FAB point counts when its norm is <= eps + this (then projected)


def _fab() -> Callable[..., AttackResult] | None:
    """The registered ``fab`` attack, or None while it is not part of robustkit."""
    from robustkit.attacks import get

    try:
        return get("fab").fn
    except (KeyError, ValueError):
        return None


def _fab_t(fab: Callable[..., AttackResult], model: nn.Module, x: torch.Tensor,
           y: torch.Tensor, *, eps: float, norm: str, steps: int, targets: int, seed: int,
           rank: str = "logit", sample_ids: torch.Tensor | None = None) -> AttackResult:
    # FAB is a minimal-norm attack: keep its point only inside the ball (projected, so
    # that rounding cannot leave it), x elsewhere; the chain re-checks the prediction.
    res = fab(model, x, y, eps=eps, norm=norm, steps=steps, targets=targets, seed=seed,
              rank=rank, sample_ids=sample_ids)
    size = res.linf if norm == "linf" else res.l2
    inside = (size <= eps + FAB_SLACK).view(-1, *([1] * (x.dim() - 1)))
    x_adv = torch.where(inside, (x + project(res.x_adv - x, eps, norm)).clamp(0, 1), x)
    return make_result(model, x, x_adv, y, predict=False)


def chain(version: str, norm: str, *, steps: int, targets: int, queries: int, eot: int
          ) -> tuple[list[tuple[str, Callable[..., AttackResult]]], list[str]]:
    """The (name, attack) sequence of a version, and the names skipped (FAB when absent)."""
    out: list[tuple[str, Callable[..., AttackResult]]]
    if version == "rand":
        out = [("apgd_ce", partial(apgd, norm=norm, loss="ce", steps=steps, eot=eot)),
               ("apgd_dlr", partial(apgd, norm=norm, loss="dlr", steps=steps, eot=eot))]
        return out, []
    fab = _fab()
    if version == "lean":
        fab_t = None if fab is None else partial(_fab_t, fab)
        return ([("lean", partial(lean_chain, norm=norm, steps=steps, targets=targets,
                                  queries=queries, fab_t=fab_t))],
                ["fab_t"] if fab is None else [])
    out = [("apgd_ce", partial(apgd, norm=norm, loss="ce", steps=steps)),
           ("apgd_t", partial(apgd_t, norm=norm, targets=targets, steps=steps))]
    if version == "fast":
        return out, []
    skipped = []
    if fab is None:
        skipped.append("fab_t")
    else:
        out.append(("fab_t", partial(_fab_t, fab, norm=norm, steps=steps, targets=targets)))
    # p_init 0.8 in both norms, as the original AutoAttack runs Square (Square's own L2
    # default is 0.1)
    out.append(("square", partial(square, norm=norm, queries=queries, p_init=SQUARE_P_INIT)))
    return out, skipped


def autoattack_curve(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                     eps: Sequence[float], norm: str = "linf", version: str = "standard",
                     steps: int = 100, targets: int = 9, queries: int = 5000, eot: int = 20,
                     seed: int = 0, sample_ids: torch.Tensor | None = None
                     ) -> list[AttackResult]:
    """AutoAttack at every eps of a grid, for far less than one run per eps.

    The largest eps runs first, on every sample. A ball of the grid lies inside every
    larger one, so a sample the whole ensemble could not break at eps e counts as robust at
    every smaller eps without being attacked again (``info["inferred_robust"]`` counts
    them), and a sample broken at e stays broken at every larger eps (its x_adv lies in the
    larger ball). The smaller eps are then probed by bisection over the samples the largest
    eps broke: the middle eps first, then the lower half on what it broke and the upper half
    on what survived it, so each sample is attacked at about log2(len(eps)) radii.

    Args:
        model, x, y, norm, version, steps, targets, queries, eot, seed: as for
            :func:`autoattack`.
        eps: budgets (each >= 0), in any order.

    Returns:
        One AttackResult per eps, in the order given; ``info["evaluated"]`` counts the
        samples each attack was run on at that eps.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x, y = torch.rand(6, 4), torch.zeros(6, dtype=torch.long)
        >>> rs = autoattack_curve(model, x, y, eps=[0.05, 0.2], version="fast", steps=5)
        >>> bool((rs[1].success >= rs[0].success).all())
        True

    Reference: Croce & Hein, "Reliable evaluation of adversarial robustness with an
    ensemble of diverse parameter-free attacks", ICML 2020 (arXiv:2003.01690).
    """
    grid = [float(e) for e in eps] if not isinstance(eps, (int, float)) else [float(eps)]
    for e in grid:
        check_inputs(model, x, y, eps=e)
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
    attacks, skipped = chain(version, norm, steps=steps, targets=targets, queries=queries,
                             eot=eot)
    x = x.detach()
    ids = sample_rng(seed, x, sample_ids, "autoattack").ids  # checked; arange(N) by default
    with eval_mode(model), torch.no_grad():
        clean = model(x).argmax(1) != y
    run = partial(_at_eps, model, x, y, attacks=attacks, seed=seed, ids=ids, clean=clean,
                  info={"skipped": list(skipped), "version": version, "norm": norm})
    *smaller, top = sorted(set(grid))
    out = {top: run(top, todo=~clean, before=None, above=None)}
    lean = version == "lean"

    def bisect(eps: list[float], todo: torch.Tensor, below: AttackResult | None,
               above: AttackResult) -> None:
        # eps ascending, all below the eps whose breaks left ``todo`` open; below: the
        # result at the largest eps under them (its breaks carry up); above: one at a
        # larger eps that broke every sample of todo (lean first tries its points)
        if not eps:
            return
        m = len(eps) // 2
        res = out[eps[m]] = run(eps[m], todo=todo, before=below, above=above if lean else None)
        # what survives eps[m] is robust below it; what it broke stays broken above
        bisect(eps[:m], todo & res.success, below, res)
        bisect(eps[m + 1:], todo & ~res.success, res, above)

    bisect(smaller, ~clean & out[top].success, None, out[top])
    return [out[e] for e in grid]


def _at_eps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, e: float, *,
            attacks: list[tuple[str, Callable[..., AttackResult]]], seed: int,
            ids: torch.Tensor,
            clean: torch.Tensor, info: dict[str, Any], todo: torch.Tensor,
            before: AttackResult | None, above: AttackResult | None) -> AttackResult:
    """The chain at eps ``e`` on the samples ``todo``; ``clean``: misclassified on x;
    breaks of ``before`` (a smaller eps) are kept; the others count as robust with x_adv = x.
    ``above`` (a larger eps): its points projected into the e-ball are tried first (one
    forward pass; breaks there count as ``"larger_eps"``)."""
    n, shape = len(x), (-1,) + (1,) * (x.dim() - 1)
    broken = clean.clone()
    by = ["clean" if b else "" for b in broken.tolist()]
    x_adv = x.clone()
    if before is not None:
        kept = before.success & ~broken
        x_adv[kept], broken = before.x_adv[kept], broken | kept
        by = [b if b else (p if k else "") for b, p, k in
              zip(by, before.info["broken_by"], kept.tolist())]
    counts, evaluated, seconds = {}, {}, {}
    triggers: dict[str, str] = {}
    best = x.clone()  # per-sample worst case among the attacks that failed
    worst = torch.full((n,), math.inf, device=x.device, dtype=x.dtype)
    steps = list(attacks)
    if above is not None:
        steps.insert(0, ("larger_eps", partial(_projected, above.x_adv, norm=info["norm"])))
    for name, attack in steps:
        rows = (todo & ~broken).nonzero().squeeze(1)
        evaluated[name], counts[name] = len(rows), 0
        if not len(rows) or e == 0:
            continue
        status(f"autoattack eps {e:g}: {name} on {len(rows)} of {n} samples")
        t0 = time.perf_counter()
        res = (attack(rows, model, x[rows], y[rows], eps=e) if name == "larger_eps" else
               attack(model, x[rows], y[rows], eps=e, seed=seed, sample_ids=ids[rows]))
        with eval_mode(model), torch.no_grad():
            logits = model(res.x_adv)
        seconds[name] = time.perf_counter() - t0
        hit, m = logits.argmax(1) != y[rows], margin(logits, y[rows])
        closer = m < worst[rows]
        best[rows[closer]], worst[rows[closer]] = res.x_adv[closer], m[closer].to(worst.dtype)
        x_adv[rows[hit]], broken[rows[hit]] = res.x_adv[hit], True
        stage = res.info.get("broken_by", [name] * len(rows))
        for i, j in zip(rows[hit].tolist(), hit.nonzero().squeeze(1).tolist()):
            by[i] = stage[j] or name
        counts[name] = int(hit.sum())
        if "counts" in res.info:  # a chain of its own (lean): its stages' numbers
            del counts[name]
            for key, into in (("counts", counts), ("evaluated", evaluated),
                              ("seconds", seconds)):
                into.update(res.info[key])
            del evaluated[name]
            triggers.update(res.info.get("triggers", {}))
    final = torch.where(broken.view(shape), x_adv, best)
    inferred = int((~broken & ~todo).sum())
    return make_result(model, x, final, y, iterations=0, info={
        **info, "broken_by": by, "counts": counts, "evaluated": evaluated,
        "seconds": seconds, "inferred_robust": inferred,
        **({"triggers": triggers} if triggers else {})})


def _projected(points: torch.Tensor, rows: torch.Tensor, model: nn.Module, x: torch.Tensor,
               y: torch.Tensor, *, eps: float, norm: str) -> AttackResult:
    """``points[rows]`` (found at a larger eps for x) projected into the eps-ball of x."""
    delta = project(points[rows] - x, eps, norm)
    return make_result(model, x, (x + delta).clamp(0, 1), y, predict=False)


RULES = {"norm": choice("linf", "l2"),
         "version": choice(*VERSIONS),
         "steps": integer(1),
         "targets": integer(1),
         "queries": integer(1),
         "eot": integer(1)}


@register("autoattack", norm="linf", curve=autoattack_curve, rules=RULES)
def autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
               norm: str = "linf", version: str = "standard", steps: int = 100,
               targets: int = 9, queries: int = 5000, eot: int = 20, seed: int = 0,
               sample_ids: torch.Tensor | None = None) -> AttackResult:
    """AutoAttack: an ensemble of parameter-free attacks, each on the survivors of the last.

    ``standard``: APGD-CE (``steps``, no restarts), APGD-T (``targets`` runner-up classes x
    ``steps``), FAB-T (same; skipped with ``info["skipped"] = ["fab_t"]`` while no ``fab``
    attack is registered) and Square (``queries``, p_init 0.8 in both norms). ``fast``:
    APGD-CE and APGD-T. ``rand`` (stochastic models): APGD-CE and APGD-DLR with loss and
    gradient averaged over ``eot`` passes. ``lean``: the same attacks with budgets that
    follow the samples (:mod:`robustkit.attacks.autoattack_lean`: targets ranked by
    linearized distance, APGD-T's later targets and FAB-T/Square only on the survivors
    closest to the boundary, Square in full where gradients show masking), for a fraction
    of standard's passes; ``info["triggers"]`` says why FAB-T and Square ran. The version
    is named in ``info["version"]``; ``standard`` is AutoAttack as published. Samples misclassified on x count as broken by ``"clean"`` (x_adv = x); a
    FAB point counts only inside the ball (projected onto it) and when misclassified there.

    Args:
        model: classifier returning logits (N, K); left unchanged.
        x: inputs (N, ...) in [0, 1].
        y: int64 (N,) true labels.
        eps: budget (>= 0) in ``norm``.
        norm: ``"linf"`` or ``"l2"``.
        version: ``"standard"``, ``"fast"``, ``"rand"`` or ``"lean"``.
        steps: APGD (and FAB) iterations per run.
        targets: target classes of APGD-T and FAB-T (capped at K - 1).
        queries: Square's query budget per sample.
        eot: passes averaged per step in ``rand``.
        seed: seeds every attack of the chain.
        sample_ids: int64 (N,) the samples' indices in the evaluated data (default
            ``arange(N)``): each sample's random draws depend on its id, not its batch.

    Returns:
        AttackResult: x_adv is each sample's first break, else its lowest-margin point over
        the attacks run; ``info["broken_by"]`` names the attack per sample ("" if none),
        ``info["counts"]`` the breaks per attack, ``info["seconds"]`` its time.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x, y = torch.rand(5, 4), torch.zeros(5, dtype=torch.long)
        >>> r = autoattack(model, x, y, eps=0.1, version="fast", steps=5)
        >>> len(r.info["broken_by"]) == 5
        True

    Reference: Croce & Hein, "Reliable evaluation of adversarial robustness with an
    ensemble of diverse parameter-free attacks", ICML 2020 (arXiv:2003.01690).
    """
    if not isinstance(eps, (int, float)) or isinstance(eps, bool):
        raise TypeError(f"eps must be a number (autoattack_curve takes a grid), got {eps!r}")
    return autoattack_curve(model, x, y, eps=[eps], norm=norm, version=version, steps=steps,
                            targets=targets, queries=queries, eot=eot, seed=seed,
                            sample_ids=sample_ids)[0]


autoattack_l2 = l2_variant(autoattack, "autoattack_l2", title="AutoAttack in the L2 ball",
                           example='version="fast", steps=5',
                           curve=partial(autoattack_curve, norm="l2"))
