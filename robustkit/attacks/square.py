"""Square attack: score-based black-box random search with square-shaped updates, Linf and L2.

Only logits are read (no gradients: everything runs under ``torch.no_grad``), so gradient
masking does not stop it. Every query lies in the eps ball around x and in [0, 1].

Shapes: images (N, C, H, W) use square windows of side s over (H, W). Flat inputs (N, D)
are treated as (N, 1, 1, D) and (N, C, L) as (N, C, 1, L): the "square" is then a 1-D
window of s = sqrt(p * D) features, as the original Square (and AutoAttack) windows a
(1, 1, D) input; reshaping D into a made-up H x W would invent a spatial neighborhood that
tabular features do not have. Windows of p * D features (the same share as on images)
were tried first: over 10 seeds they broke as many samples on average on breast-cancer and
a 100-class table, but one breast-cancer GMM sample that the original breaks with 11 of 20
seeds only with 1 of 20 (benchmarks/attacks_square_flat.py).
"""
from __future__ import annotations

import functools

import torch
from torch import nn

from robustkit.attacks.base import (
    NORMS,
    AttackResult,
    check_inputs,
    check_logits,
    eval_mode,
    make_result,
    project,
    register,
)
from robustkit.attacks.rng import SampleRNG, rand, sample_rng
from robustkit.attacks.square_budget import MarginFollow
from robustkit.attacks.square_windows import l2_candidate, l2_init, side, signs
from robustkit.attacks.variants import l2_variant
from robustkit.params import choice, integer, number

# Iterations (out of 10,000; rescaled to the budget) after which p halves (paper, sec. 3).
HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
SQUARE_P_INIT = 0.8  # AutoAttack's Square in both norms (fra31/auto-attack autoattack.py)


def p_schedule(p_init: float, it: int, budget: int) -> float:
    """Share of features a window covers at iteration ``it`` of ``budget``: p_init halved
    at each of ``HALVINGS`` (for a 10,000-query budget; rescaled for others)."""
    i = int(it / budget * 10000)
    return p_init / 2 ** sum(i > h for h in HALVINGS)


def _as_4d(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 4:
        return x
    if x.dim() == 2:
        return x[:, None, None, :]
    if x.dim() == 3:
        return x[:, :, None, :]
    raise ValueError(f"x must have shape (N, D), (N, C, L) or (N, C, H, W), got {tuple(x.shape)}")


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y - max_{j != y} z_j per sample: the objective Square minimizes (< 0: broken)."""
    own = logits.gather(1, y[:, None]).squeeze(1)
    return own - logits.scatter(1, y[:, None], float("-inf")).amax(1)


def _linf_init(x: torch.Tensor, eps: float, gen: SampleRNG) -> torch.Tensor:
    # vertical stripes: one random sign per (sample, channel, column)
    n, c, _, w = x.shape
    return (x + eps * signs((n, c, 1, w), gen, x)).clamp(0, 1)


@functools.lru_cache(maxsize=64)
def _offsets(sh: int, sw: int, w: int, device: torch.device) -> torch.Tensor:
    """Flat offsets of an sh x sw window's pixels from its corner in rows of width w."""
    return (torch.arange(sh, device=device)[:, None] * w
            + torch.arange(sw, device=device)).flatten()


def _linf_candidate(x: torch.Tensor, best: torch.Tensor, eps: float, p: float,
                    gen: SampleRNG) -> torch.Tensor:
    n, c, h, w = x.shape
    sh, sw = side(p, h, w)
    # one draw per query (the window's corner, a sign per channel); the window's pixels by
    # flat index (corner + offsets): only the window is read and written
    u = rand(gen, (n, 2 + c), device=x.device, dtype=torch.float32)
    r0 = (u[:, :1] * (h - sh + 1)).long().clamp_max(h - sh)
    c0 = (u[:, 1:2] * (w - sw + 1)).long().clamp_max(w - sw)
    idx = (r0 * w + c0 + _offsets(sh, sw, w, x.device)).unsqueeze(1).expand(n, c, sh * sw)
    step = eps * torch.where(u[:, 2:, None] < 0.5, -1.0, 1.0).to(x.dtype)
    xw = x.flatten(2).gather(2, idx)
    new = (xw + step).clamp(0, 1)
    # Where the draw repeats the current window (likely once windows are a few pixels), take
    # the opposite signs instead: a query that changes nothing is a wasted query.
    same = (new == best.flatten(2).gather(2, idx)).flatten(1).all(1).view(n, 1, 1)
    new = torch.where(same, (xw - step).clamp(0, 1), new)
    return best.flatten(2).scatter(2, idx, new).view_as(best)


def run_square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str,
               queries: int, p_init: float, seed: int,
               sample_ids: torch.Tensor | None = None, start: torch.Tensor | None = None,
               own: torch.Tensor | None = None, copy: torch.Tensor | None = None,
               follow: MarginFollow | None = None) -> AttackResult:
    """Square as :func:`square` runs it, plus: ``start`` (N, ...) points to start from
    instead of Square's own start (projected into the ball and [0, 1]), except on the rows
    ``own`` (bool (N,)); ``copy`` (int64 (N,)): rows of one sample (equal ``sample_ids``)
    with different copy numbers draw different numbers, and all stop when one breaks;
    ``follow`` (:class:`~robustkit.attacks.square_budget.MarginFollow`), called after
    ``done`` candidate queries for every ``done`` in its ``points``, names the rows to stop
    there, unbroken, at their best point."""
    check_inputs(model, x, y, eps=eps)
    if not isinstance(queries, int) or isinstance(queries, bool) or queries < 1:
        raise ValueError(f"queries must be an integer >= 1, got {queries!r}")
    if not isinstance(p_init, (int, float)) or not 0 < p_init <= 1:
        raise ValueError(f"p_init must be a number in (0, 1], got {p_init!r}")
    n, dev = len(x), x.device
    q = torch.zeros(n, dtype=torch.long, device=dev)
    if eps == 0:
        return make_result(model, x, x.clone(), y, iterations=q, info={"queries": q})
    x4, gen = _as_4d(x.detach()), sample_rng(seed, x, sample_ids, "square")
    if copy is not None:
        gen = gen.take(torch.arange(n, device=dev), copy)
    init, candidate = ((_linf_init, _linf_candidate) if norm == "linf"
                       else (l2_init, l2_candidate))
    with eval_mode(model), torch.no_grad():
        def ask(v: torch.Tensor) -> torch.Tensor:
            return check_logits(model(v.reshape(len(v), *x.shape[1:])), len(v))

        q += 1
        pred = ask(x4).argmax(1)
        x_out = x4.clone()
        rows = (pred == y).nonzero().squeeze(1)
        if queries > 1 and len(rows):
            xs, ys = x4[rows], y[rows]
            best = init(xs, eps, gen.take(rows))
            if start is not None:
                given = (xs + project(start.reshape(x4.shape)[rows] - xs, eps, norm)).clamp(0, 1)
                mine = torch.zeros(n, dtype=torch.bool, device=dev) if own is None else own
                best = torch.where(mine[rows].view(-1, 1, 1, 1), best, given)
            logits = ask(best)
            q[rows] += 1
            s = {"idx": rows, "x": xs, "y": ys, "best": best, "m": margin(logits, ys),
                 "pred": logits.argmax(1), "id": gen.ids[rows]}
            sib = copy is not None
            s = _leave(s, s["pred"] != ys, x_out, pred, sib)
            points = follow.points if follow is not None else set()
            for it in range(queries - 2):
                if not len(s["idx"]):
                    break
                cand = candidate(s["x"], s["best"], eps, p_schedule(p_init, it, queries),
                                 gen.take(s["idx"]))
                logits = ask(cand)
                q[s["idx"]] += 1
                m, p = margin(logits, s["y"]), logits.argmax(1)
                broke = p != s["y"]
                take = (m < s["m"]) | broke
                s.update(best=torch.where(take.view(-1, 1, 1, 1), cand, s["best"]),
                         m=torch.where(take, m, s["m"]), pred=torch.where(take, p, s["pred"]))
                s = _leave(s, broke, x_out, pred, sib)
                if follow is not None and it + 1 in points and len(s["idx"]):
                    s = _leave(s, follow(it + 1, s["idx"], s["m"]), x_out, pred)
            x_out[s["idx"]], pred[s["idx"]] = s["best"], s["pred"]
    # pred is known for every returned point: no extra (uncounted) query
    return make_result(model, x, x_out.reshape(x.shape), y, iterations=q, pred=pred,
                       info={"queries": q})


def _leave(s: dict[str, torch.Tensor], broke: torch.Tensor, x_out: torch.Tensor,
           pred: torch.Tensor, siblings: bool = False) -> dict[str, torch.Tensor]:
    """Write the rows' points (and predictions) out and drop them from the state: the
    broken ones, or those ``follow`` stops; with ``siblings``, also the other rows of a
    sample a row broke."""
    if not bool(broke.any()):
        return s
    if siblings:
        broke = broke | torch.isin(s["id"], s["id"][s["pred"] != s["y"]])
    rows = s["idx"][broke]
    x_out[rows], pred[rows] = s["best"][broke], s["pred"][broke]
    return {k: v[~broke] for k, v in s.items()}


RULES = {"norm": choice("linf", "l2"),
         "queries": integer(1),
         "p_init": number(0, 1, open_low=True, none=True)}


@register("square", norm="linf", rules=RULES)
def square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
           norm: str = "linf", queries: int = 5000, p_init: float | None = None,
           seed: int = 0, sample_ids: torch.Tensor | None = None) -> AttackResult:
    """Square attack: random search over square-shaped updates, from the logits alone.

    Linf: start at vertical stripes (x + eps * a random sign per column and channel); each
    query sets one random s x s window, per channel, to x +- eps and keeps the change if
    the margin z_y - max_{j != y} z_j drops. L2 (``norm="l2"``): start at a grid of
    pseudo-Gaussian blocks; each query moves the mass of two windows plus the unused
    budget into one window shaped as two pseudo-Gaussian halves of opposite sign. The
    window covers a share p of the features, p_init halved at the paper's iterations
    (10, 50, 200, ..., 8000 of 10,000, rescaled to ``queries``). A sample stops at its
    first misclassified point. No gradients are taken.

    Args:
        model: classifier returning logits (N, K); left unchanged.
        x: inputs (N, C, H, W), (N, C, L) or (N, D) in [0, 1] (see the module docstring
            for flat inputs).
        y: int64 (N,) true labels.
        eps: budget (>= 0) in ``norm``; ``eps=0`` returns x bitwise.
        norm: ``"linf"`` or ``"l2"``.
        queries: model evaluations per sample at most (>= 1), counting the clean one.
        p_init: initial window share; default 0.8 (Linf), 0.1 (L2), as in the paper.
        seed: seeds the windows and signs.
        sample_ids: int64 (N,) the samples' ids, default ``arange(N)``: random draws
            are per sample (:mod:`robustkit.attacks.rng`), not per batch.

    Returns:
        AttackResult; ``info["queries"]`` (= ``iterations``): int64 (N,) queries per sample.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x, y = torch.rand(5, 4), torch.zeros(5, dtype=torch.long)
        >>> r = square(model, x, y, eps=0.1, queries=20)
        >>> float(r.linf.max()) <= 0.1 + 1e-6 and int(r.info["queries"].max()) <= 20
        True

    Reference: Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient
    black-box adversarial attack via random search", ECCV 2020 (arXiv:1912.00049).
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    p = p_init if p_init is not None else (0.8 if norm == "linf" else 0.1)
    return run_square(model, x, y, eps=eps, norm=norm, queries=queries, p_init=p, seed=seed,
                    sample_ids=sample_ids)


square_l2 = l2_variant(square, "square_l2", title="Square attack in the L2 ball",
                       example="queries=20")
