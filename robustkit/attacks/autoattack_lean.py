"""AutoAttack's ``lean`` version: the standard attacks, with budgets that follow the samples.

1. APGD-CE (``steps``) on every sample: the short test. Each survivor's closeness is
   ``r = margin at its best point / margin at x`` (z_y - max_{j != y} z_j; small r: APGD
   brought it near the boundary). r >= 1 (no progress at all) or a zero input gradient
   are signs of gradient masking.
2. APGD-T toward targets ranked by linearized distance at x (MALT), interleaved with
   AutoAttack's order (largest clean logits): the first two targets on
   every survivor, then target j on the ``c / (j - 1)`` share of the survivors closest to
   the boundary only (A3's discarding: the far ones are dropped; c >= 1 spends up to
   ``TARGET_RUNS`` runs per sample given to the chain, so that few survivors get every
   target); each sample stops at its first break.
3. FAB-T (best ``FAB_TARGETS`` targets by linearized distance) on the ``SHARE`` closest
   survivors: a short test by another geometry (on a breast-cancer GMM, FAB-T broke 3
   samples that every APGD run left). Square (``queries / SHORT_SQUARE``) on them only
   where APGD-T's later targets or FAB-T still broke samples ("breaking": the attacks
   have not converged), and with its full ``queries`` on every survivor that showed signs
   of masking ("masking"). ``info["triggers"]`` says why each ran. Square's cost is mostly its
   sequential iterations (the batch shrinks, the loop does not), hence the short budget
   where it only backs up the gradient attacks.

Reference: Croce & Hein, ICML 2020 (AutoAttack); Liu et al., "Practical evaluation of
adversarial robustness via adaptive auto attack", CVPR 2022 (A3: discarding); Melamed et
al., "Adversarial attacks on the 'right' targets", NeurIPS 2024 (MALT: target ranking).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from robustkit.attacks.apgd import apgd, run_apgd
from robustkit.attacks.apgd_common import resolve_loss
from robustkit.attacks.base import AttackResult, eval_mode, make_result
from robustkit.attacks.rng import sample_rng
from robustkit.attacks.square import SQUARE_P_INIT, margin, square
from robustkit.attacks.targets import (
    interleave,
    linearized_distance,
    next_ranks,
    pairs,
    row_budget,
)

TARGET_RUNS = 1.25  # APGD-T runs per sample given to the chain (AutoAttack: 9 per survivor)
SHARE = 0.25  # the closest survivors FAB-T and Square run on when APGD-T still breaks
SHORT_SQUARE = 5  # Square's queries / this on them (its full budget where masking shows)
FAB_TARGETS = 3
NO_PROGRESS = 0.999  # r above this: APGD-CE did not move the margin (a sign of masking)


def lean_chain(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
               norm: str, steps: int, targets: int, queries: int, seed: int,
               fab_t: Callable[..., AttackResult] | None,
               sample_ids: torch.Tensor | None = None) -> AttackResult:
    """The lean chain on x (all predicted as y); see the module docstring. ``fab_t``: the
    chain's FAB-T (None: skipped). ``info["broken_by"]`` names the stage per sample."""
    n = len(x)
    ids = sample_rng(seed, x, sample_ids, "apgd").ids  # draws per sample, not per batch
    by = [""] * n
    counts: dict[str, int] = {}
    evaluated: dict[str, int] = {}
    seconds: dict[str, float] = {}
    with eval_mode(model):
        t0 = time.perf_counter()
        res = apgd(model, x, y, eps=eps, norm=norm, loss="ce", steps=steps, seed=seed,
                   sample_ids=ids)
        x_adv, broken = res.x_adv.clone(), res.success.clone()
        _note("apgd_ce", broken, by, counts, evaluated, n, seconds, t0)
        rows = (~broken).nonzero().squeeze(1)
        state = _State(model, x, y, x_adv, broken, by)
        if len(rows):
            t0 = time.perf_counter()
            m0 = state.margins(x[rows], rows)
            r = state.margins(x_adv[rows], rows) / m0.clamp_min(1e-12)
            # MALT's ranking at x, interleaved with AutoAttack's (the largest clean logits):
            # on the digits models each ranks first targets the other ranks 2-6
            cls, dist = linearized_distance(model, x[rows], y[rows], norm)
            with torch.no_grad():
                by_logit = model(x[rows]).argsort(dim=1, descending=True)[:, 1:]
            cls = interleave(cls, by_logit)
            masked = (r > NO_PROGRESS) | dist.isinf().all(1)
            late = _apgd_t(state, rows, r, m0.clamp_min(1e-12),
                           cls[:, :min(targets, cls.shape[1])], budget=TARGET_RUNS * n,
                           eps=eps, norm=norm, steps=steps, seed=seed, ids=ids)
            evaluated["apgd_t"], counts["apgd_t"] = len(rows), int(state.broken[rows].sum())
            seconds["apgd_t"] = time.perf_counter() - t0
            triggers = _tail(state, rows, r, cls, masked, late, eps=eps, norm=norm,
                             steps=steps, queries=queries, seed=seed, ids=ids, fab_t=fab_t,
                             counts=counts, evaluated=evaluated, seconds=seconds)
        else:
            triggers = {"fab_t": "none", "square": "none"}
    return make_result(model, x, state.x_adv, y, info={
        "broken_by": by, "counts": counts, "evaluated": evaluated, "seconds": seconds,
        "triggers": triggers})


class _State:
    """The chain's per-sample state: best points, breaks, and which stage broke each."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 x_adv: torch.Tensor, broken: torch.Tensor, by: list[str]) -> None:
        self.model, self.x, self.y = model, x, y
        self.x_adv, self.broken, self.by = x_adv, broken, by

    def margins(self, points: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """z_y - max_{j != y} z_j at ``points`` (one per sample of ``idx``)."""
        with torch.no_grad():
            return margin(self.model(points), self.y[idx])

    def take(self, rows: torch.Tensor, points: torch.Tensor, hit: torch.Tensor,
             name: str) -> None:
        """Record the breaks ``hit`` (over ``rows``) found at ``points``."""
        new = rows[hit & ~self.broken[rows]]
        sel = hit & ~self.broken[rows]
        self.x_adv[new], self.broken[new] = points[sel], True
        for i in new.tolist():
            self.by[i] = name


def _apgd_t(s: _State, rows: torch.Tensor, r: torch.Tensor, m0: torch.Tensor,
            cls: torch.Tensor, *, budget: float,
            eps: float, norm: str, steps: int, seed: int, ids: torch.Tensor) -> int:
    """Targeted APGD in rank order: ranks 1 and 2 on every row, rank j > 2 on the closest
    ``c / (j - 1)`` share (by r, updated after rank 1), c >= 1 so that all ranks together
    make at most ``budget`` target runs where that allows more. Returns the breaks at
    ranks >= 2."""
    loss, _ = resolve_loss("dlr", int(cls.shape[1]) + 1, targeted=True)
    gen = sample_rng(seed, s.x, ids, "apgd")
    n0, top = len(rows), int(cls.shape[1])
    harmonic = sum(1 / (j - 1) for j in range(3, top + 1))
    c = max(1.0, (budget - 2 * n0) / (n0 * harmonic)) if harmonic else 1.0

    def run(sub: torch.Tensor, ranks: list[int]) -> int:
        # sub: positions in rows; each (sample, rank) pair one APGD-T row, siblings stop
        # together at the first break
        sample, rank = pairs(sub, ranks)
        keep = rank <= 1 + (c * n0 / (1 + order[sample])).floor().long()
        sample, rank = sample[keep], rank[keep]
        if not len(sample):
            return 0
        i = rows[sample]
        xa, ok, _, _, _ = run_apgd(s.model, s.x[i], s.y[i], eps=eps, norm=norm, loss=loss,
                                   steps=steps, rho=0.75, gen=gen.take(i, rank - 1),
                                   target=cls[sample, rank - 1], group=sample)
        before = int(s.broken[rows].sum())
        for j in ranks:  # a sample keeps its best-ranked target's break
            sel = rank == j
            s.take(i[sel], xa[sel], ok[sel], "apgd_t")
        r_new = s.margins(xa, i) / m0[sample]
        r[sample] = torch.minimum(r[sample], r_new.to(r.dtype))
        return int(s.broken[rows].sum()) - before

    order = torch.zeros(n0, dtype=torch.long, device=rows.device)  # all ranks 1 allowed
    run(torch.arange(n0, device=rows.device), [1])
    open_ = (~s.broken[rows]).nonzero().squeeze(1)
    # closeness order among all survivors of APGD-CE (0: closest)
    order = r.argsort().argsort()
    late, left = 0, list(range(2, cls.shape[1] + 1))
    numel = math.prod(s.x.shape[1:])
    while left and len(open_):
        group = next_ranks(left, len(open_), numel, row_budget(s.x.device))
        late += run(open_, group)
        left = left[len(group):]
        open_ = open_[~s.broken[rows[open_]]]
    return late


def _tail(s: _State, rows: torch.Tensor, r: torch.Tensor, cls: torch.Tensor,
          masked: torch.Tensor, late: int, *, eps: float, norm: str, steps: int,
          queries: int, seed: int, ids: torch.Tensor,
          fab_t: Callable[..., AttackResult] | None,
          counts: dict[str, int], evaluated: dict[str, int], seconds: dict[str, float]
          ) -> dict[str, Any]:
    """FAB-T on the closest SHARE of the survivors (a short test by another geometry),
    then Square on them where APGD-T's later targets or FAB-T still broke samples
    ("breaking"), and on every survivor where gradients showed masking ("masking").
    Returns the trigger of each."""
    close = torch.zeros_like(masked)
    close[r.argsort()[:math.ceil(SHARE * len(rows))]] = True
    triggers: dict[str, Any] = {"fab_t": "closest share"}
    for name in ("fab_t", "square"):
        alive = ~s.broken[rows]
        if name == "square":
            breaking = bool(late or counts.get("fab_t"))
            masking = bool((masked & alive).any())
            triggers[name] = "+".join(w for w, on in (("breaking", breaking),
                                                      ("masking", masking)) if on) or "none"
            want = (close if breaking else torch.zeros_like(close)) | masked
        else:
            want = close
        sub = (want & alive).nonzero().squeeze(1)
        evaluated[name], counts[name] = len(sub), 0
        if not len(sub) or (name == "fab_t" and fab_t is None):
            continue
        t0 = time.perf_counter()
        i = rows[sub]
        if fab_t is not None and name == "fab_t":
            res = fab_t(s.model, s.x[i], s.y[i], eps=eps, norm=norm, steps=steps,
                        targets=min(FAB_TARGETS, cls.shape[1]), seed=seed, rank="linearized",
                        sample_ids=ids[i])
        else:
            full = bool(masked[sub].any())
            res = square(s.model, s.x[i], s.y[i], eps=eps, norm=norm, seed=seed,
                         p_init=SQUARE_P_INIT, sample_ids=ids[i],
                         queries=queries if full else max(queries // SHORT_SQUARE, 1))
        with torch.no_grad():
            hit = s.model(res.x_adv).argmax(1) != s.y[i]
        s.take(i, res.x_adv, hit, name)
        counts[name] = int(hit.sum())
        seconds[name] = time.perf_counter() - t0
    return triggers


def _note(name: str, broken: torch.Tensor, by: list[str], counts: dict[str, int],
          evaluated: dict[str, int], n: int, seconds: dict[str, float], t0: float) -> None:
    for i in broken.nonzero().squeeze(1).tolist():
        by[i] = name
    counts[name], evaluated[name] = int(broken.sum()), n
    seconds[name] = time.perf_counter() - t0
