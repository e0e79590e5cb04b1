"""AutoAttack's ``lean`` version: the standard attacks, with budgets that follow the samples.

1. APGD-CE (``steps``) on every sample: the short test; a row that stopped improving (its
   best loss rose by at most ``STALL`` of itself between two checkpoints, from half the
   steps on) stops there, as in every APGD run of the chain. Each survivor's closeness is
   ``r = margin at its best point / margin at x`` (z_y - max_{j != y} z_j; small r: APGD
   brought it near the boundary). r >= 1 (no progress at all) or a zero input gradient
   are signs of gradient masking.
2. APGD-T toward targets ranked by linearized distance at x (MALT), interleaved with
   AutoAttack's order (largest clean logits): rank 1 on every survivor, then ranks 2 to
   ``targets`` together (rows = (sample, target), a sample's rows stop at its first
   break), rank j > 2 only where ``r * (j - 1) <= TARGET_REACH`` (r updated by rank 1): the
   closer a sample came to the boundary, the more targets it gets, and the far ones are
   dropped (A3's discarding, decided per sample). Not with two classes: there the one
   target's margin loss is monotone in CE, and APGD-T would retrace APGD-CE.
3. FAB-T (best ``FAB_TARGETS`` targets by linearized distance) on the close survivors
   (r <= ``CLOSE``): a short test by another geometry (on a breast-cancer GMM, FAB-T broke
   3 samples that every APGD run left).
4. Square on every survivor, in one run: from Square's own start on the far ones ("far"),
   from the chain's best point and ``CLOSE_RESTARTS`` more times from Square's own start on
   the close ones ("close"), where a restart is most likely to pay off. Each row
   keeps querying while its margin falls fast enough to reach 0 within the budget
   (:mod:`robustkit.attacks.square_budget`; its windows shrink on the full budget's
   schedule, so a row stopped early made exactly a full run's first queries). On the MNIST
   adversarially trained CNNs the samples the gradient attacks leave and the reference's
   Square breaks are found this way for about 730 of Square's 5,000 queries per survivor.
   Where the gradients showed masking, Square from its own start with its full budget
   ("masking").
   ``info["triggers"]`` says which rules fired.

Every decision reads the sample's own numbers (r, its gradient, its ranking), never a
share of the batch: a sample gets the same result whatever other samples share its batch
or shard.

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

from robustkit.attacks.apgd import run_apgd
from robustkit.attacks.apgd_common import resolve_loss
from robustkit.attacks.base import AttackResult, eval_mode, make_result
from robustkit.attacks.rng import sample_rng
from robustkit.attacks.square import SQUARE_P_INIT, margin, run_square
from robustkit.attacks.square_budget import MarginFollow
from robustkit.attacks.targets import (
    interleave,
    linearized_distance,
    row_budget,
)

# rank j > 2 runs where r * (j - 1) <= this. r after APGD-CE on the survivors of the digits
# MLP and the MNIST FGSM-RS CNN at eps 0.05 / 0.3: quartiles ~0.32, 0.46, 0.58, so at the
# robust eps ~0.7 runs per survivor beyond ranks 1 and 2 (AutoAttack: 9 in all); at larger
# eps the survivors come closer (digits MLP at 0.1: median r 0.17) and get more targets
TARGET_REACH = 0.6
CLOSE = 0.1  # r at most this: FAB-T, and Square restarts from its own start
CLOSE_RESTARTS = 2
FAB_TARGETS = 3
# APGD rows stop at a checkpoint from half their steps on where their best loss rose by at
# most this share since the previous one (converged): on the digits, breast-cancer and MNIST
# benchmark models no APGD-CE row stopped this way at 57 of 100 steps would have broken
# later; one MNIST PGD CNN row that stalled at 70 did (the later stages still run on it)
STALL = 1e-3
NO_PROGRESS = 0.999  # r above this: APGD-CE did not move the margin (a sign of masking)


def lean_chain(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
               norm: str, steps: int, targets: int, queries: int, seed: int,
               fab_t: Callable[..., AttackResult] | None,
               sample_ids: torch.Tensor | None = None) -> AttackResult:
    """The lean chain on x (all predicted as y); see the module docstring. ``fab_t``: the
    chain's FAB-T (None: skipped). ``info["broken_by"]`` names the stage per sample."""
    n = len(x)
    gen = sample_rng(seed, x, sample_ids, "apgd")  # draws per sample, not per batch
    ids = gen.ids
    by = [""] * n
    counts: dict[str, int] = {}
    evaluated: dict[str, int] = {}
    seconds: dict[str, float] = {}
    with eval_mode(model):
        t0 = time.perf_counter()
        x_adv, broken, _, _, _ = run_apgd(model, x, y, eps=eps, norm=norm, loss="ce",
                                          steps=steps, rho=0.75,
                                          gen=gen.take(torch.arange(n, device=x.device)),
                                          stall=STALL)
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
            # two classes: the one target's margin loss is a monotone function of CE, so
            # APGD-T would retrace APGD-CE from another start (AutoAttack skips it below 4)
            two = cls.shape[1] < 2
            if not two:
                _apgd_t(state, rows, r, m0.clamp_min(1e-12),
                        cls[:, :min(targets, cls.shape[1])], eps=eps, norm=norm,
                        steps=steps, seed=seed, ids=ids)
            evaluated["apgd_t"] = 0 if two else len(rows)
            counts["apgd_t"] = int(state.broken[rows].sum())
            seconds["apgd_t"] = time.perf_counter() - t0
            triggers = _tail(state, rows, r, m0.clamp_min(1e-12), cls, masked, eps=eps, norm=norm,
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
            cls: torch.Tensor, *, eps: float, norm: str, steps: int, seed: int,
            ids: torch.Tensor) -> None:
    """Targeted APGD in rank order: rank 1 on every row, then ranks 2 to ``cls.shape[1]``
    in one run, rank j > 2 only where ``r * (j - 1) <= TARGET_REACH`` (r updated by rank
    1, and by every run after it)."""
    loss, _ = resolve_loss("dlr", int(cls.shape[1]) + 1, targeted=True)
    gen = sample_rng(seed, s.x, ids, "apgd")
    cap = max(1, row_budget(s.x.device) // math.prod(s.x.shape[1:]))

    def run(sample: torch.Tensor, rank: torch.Tensor) -> None:
        # sample: positions in rows, sample-major; each (sample, rank) pair one APGD-T row,
        # siblings stop together at the first break. Chunks of whole samples (at most
        # ``cap`` rows where a sample allows): rows never interact across samples
        for part in _chunks(sample, cap):
            sm, rk = sample[part], rank[part]
            i = rows[sm]
            xa, ok, _, _, _ = run_apgd(s.model, s.x[i], s.y[i], eps=eps, norm=norm,
                                       loss=loss, steps=steps, rho=0.75,
                                       gen=gen.take(i, rk - 1), target=cls[sm, rk - 1],
                                       group=sm, stall=STALL)
            for j in rk.unique().tolist():  # a sample keeps its best-ranked target's break
                sel = rk == j
                s.take(i[sel], xa[sel], ok[sel], "apgd_t")
            r_new = (s.margins(xa, i) / m0[sm]).to(r.dtype)
            r.scatter_reduce_(0, sm, r_new, reduce="amin")

    n0 = len(rows)
    first = torch.arange(n0, device=rows.device)
    run(first, torch.ones_like(first))
    open_ = (~s.broken[rows]).nonzero().squeeze(1)
    if cls.shape[1] < 2 or not len(open_):
        return
    rank = torch.arange(2, cls.shape[1] + 1, device=rows.device).repeat(len(open_))
    sample = open_.repeat_interleave(cls.shape[1] - 1)
    keep = (rank == 2) | (r[sample] * (rank - 1) <= TARGET_REACH)
    run(sample[keep], rank[keep])


def _chunks(sample: torch.Tensor, cap: int) -> list[torch.Tensor]:
    """Consecutive index ranges of ``sample`` (sorted, sample-major) of at most ``cap`` rows
    each, never splitting one sample's rows (a sample with more rows gets a chunk alone)."""
    out, start = [], 0
    bounds = (torch.nonzero(sample[1:] != sample[:-1]).squeeze(1) + 1).tolist() + [len(sample)]
    last = 0
    for b in bounds:
        if b - start > cap and last > start:
            out.append(torch.arange(start, last, device=sample.device))
            start = last
        last = b
    if last > start:
        out.append(torch.arange(start, last, device=sample.device))
    return out


def _tail(s: _State, rows: torch.Tensor, r: torch.Tensor, m0: torch.Tensor,
          cls: torch.Tensor, masked: torch.Tensor, *, eps: float, norm: str, steps: int,
          queries: int, seed: int, ids: torch.Tensor,
          fab_t: Callable[..., AttackResult] | None,
          counts: dict[str, int], evaluated: dict[str, int], seconds: dict[str, float]
          ) -> dict[str, Any]:
    """FAB-T on the close survivors (r <= CLOSE; a short test by another geometry), then
    Square with a budget that follows each sample's margin
    (:mod:`robustkit.attacks.square_budget`), in one run: from Square's own start on the far
    survivors ("far"); from the chain's best point and ``CLOSE_RESTARTS`` times from its own
    start on the close ones ("close"); then in full from its own start where the gradients
    showed masking ("masking"). Returns which rules fired for each (joined by "+", or
    "none")."""
    close = r <= CLOSE
    triggers: dict[str, Any] = {}
    t0 = time.perf_counter()
    sub = (close & ~s.broken[rows]).nonzero().squeeze(1)
    evaluated["fab_t"], counts["fab_t"] = len(sub), 0
    triggers["fab_t"] = "close" if len(sub) else "none"
    if len(sub) and fab_t is not None:
        i = rows[sub]
        res = fab_t(s.model, s.x[i], s.y[i], eps=eps, norm=norm, steps=steps,
                    targets=min(FAB_TARGETS, cls.shape[1]), seed=seed, rank="linearized",
                    sample_ids=ids[i])
        counts["fab_t"] = _keep(s, i, res.x_adv, "fab_t")
    seconds["fab_t"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    alive = ~s.broken[rows] & ~masked
    near, far = (alive & close).nonzero().squeeze(1), (alive & ~close).nonzero().squeeze(1)
    full = (~s.broken[rows] & masked).nonzero().squeeze(1)
    evaluated["square"], counts["square"] = len(near) + len(far) + len(full), 0
    triggers["square"] = "+".join(w for w, on in (("close", near), ("far", far),
                                                  ("masking", full)) if len(on)) or "none"
    if len(near) or len(far):
        # rows: each far survivor from Square's own start; each close one from the chain's
        # best point and CLOSE_RESTARTS times from Square's own start
        sub = torch.cat([far, near, *[near] * CLOSE_RESTARTS])
        copy = torch.cat([torch.zeros_like(far), torch.zeros_like(near),
                          *[torch.full_like(near, k + 1) for k in range(CLOSE_RESTARTS)]])
        own = torch.ones_like(sub, dtype=torch.bool)
        own[len(far):len(far) + len(near)] = False
        i = rows[sub]
        res = run_square(s.model, s.x[i], s.y[i], eps=eps, norm=norm, seed=seed,
                         queries=queries, p_init=SQUARE_P_INIT, sample_ids=ids[i],
                         start=s.x_adv[i], own=own, copy=copy,
                         follow=MarginFollow(queries, m0[sub]))
        counts["square"] += _keep(s, i, res.x_adv, "square")
    if len(full):
        i = rows[full]
        res = run_square(s.model, s.x[i], s.y[i], eps=eps, norm=norm, seed=seed,
                         queries=queries, p_init=SQUARE_P_INIT, sample_ids=ids[i])
        counts["square"] += _keep(s, i, res.x_adv, "square")
    seconds["square"] = time.perf_counter() - t0
    return triggers


def _keep(s: _State, i: torch.Tensor, points: torch.Tensor, name: str) -> int:
    """Record the breaks among ``points`` (one per row of ``i``; rows may repeat a sample,
    the first break of a sample wins); returns how many samples broke."""
    with torch.no_grad():
        hit = s.model(points).argmax(1) != s.y[i]
    before = int(s.broken.sum())
    for j in hit.nonzero().squeeze(1).tolist():
        if not bool(s.broken[i[j]]):
            s.take(i[j:j + 1], points[j:j + 1], hit[j:j + 1], name)
    return int(s.broken.sum()) - before


def _note(name: str, broken: torch.Tensor, by: list[str], counts: dict[str, int],
          evaluated: dict[str, int], n: int, seconds: dict[str, float], t0: float) -> None:
    for i in broken.nonzero().squeeze(1).tolist():
        by[i] = name
    counts[name], evaluated[name] = int(broken.sum()), n
    seconds[name] = time.perf_counter() - t0
