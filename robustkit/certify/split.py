"""Branch and bound over input boxes: the driver the kernel and Gaussian certificates share.

A *bounder* maps a batch of axis-aligned boxes of the flattened input, with the label of
the sample each box belongs to, to a ``BoxBound``: whether the prediction is provably that
label on the whole box, and which coordinate to split where it is not. The driver starts
from the eps-ball intersected with [0, 1] (for L2 its bounding box, and boxes that miss
the L2 ball are dropped: the distance from x to a box is exact), bounds every open box,
drops the certified ones, searches the others for a witness (the box centre and a few
projected gradient steps from it, each point checked on the model itself by
``verify_witness``), and halves each box still open along the coordinate its bounder
chose. A sample is certified when no open box is left, broken when a witness is verified,
and unknown when it runs out of rounds, boxes or time. In low dimension this decides every
sample (boxes shrink around the decision boundary until centres fall on both sides).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robustkit.certify.base import CertifyResult, verify_witness

F64 = torch.float64


@dataclass(frozen=True)
class BoxBound:
    """What a bounder says about boxes (B,): ``certified`` bool, ``split`` int64 coordinate
    to halve next, ``margin`` float64 sound lower bound of the worst margin (diagnostics)."""

    certified: torch.Tensor
    split: torch.Tensor
    margin: torch.Tensor


Bounder = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], BoxBound]


class frozen_eval:
    """The model in eval mode for a block, each submodule's previous mode restored after."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modes = [(m, m.training) for m in model.modules()]

    def __enter__(self) -> nn.Module:
        self.model.eval()
        return self.model

    def __exit__(self, *exc: object) -> None:
        for m, mode in self.modes:
            m.training = mode


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``logits[y] - max_{j != y} logits[j]`` (N,): positive where y is predicted."""
    own = logits.gather(1, y[:, None]).squeeze(1)
    return own - logits.scatter(1, y[:, None], float("-inf")).amax(1)


def project(z: torch.Tensor, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
            eps: float, norm: str) -> torch.Tensor:
    """z clamped to its box, then (L2) pulled into the ball around x and into [0, 1]."""
    z = torch.minimum(torch.maximum(z, lo), hi)
    if norm == "l2":
        d = z - x
        n = torch.linalg.vector_norm(d, dim=1, keepdim=True)
        z = (x + d * (eps / n.clamp_min(1e-300)).clamp(max=1.0)).clamp(0, 1)
    return z


def search(model: nn.Module, like: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
           lo: torch.Tensor, hi: torch.Tensor, *, eps: float, norm: str, steps: int,
           size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Look for misclassified points in boxes (B, D) from their centres, by ``steps``
    projected gradient steps on the margin (sign steps in Linf, normalized in L2) of
    length ``size`` (B,). Returns (found bool (B,), points (B, D) float64); a found point
    is only a candidate until ``verify_witness`` accepts it."""
    z = project((lo + hi) / 2, x, lo, hi, eps, norm)
    found = torch.zeros(len(z), dtype=torch.bool, device=z.device)
    best = z.clone()
    shape = (-1, *like.shape[1:])
    for t in range(steps + 1):
        zin = z.reshape(shape).to(like.dtype).requires_grad_(t < steps)
        with torch.enable_grad():
            logits = model(zin)
            m = margin(logits, y)
        hit = (logits.argmax(1) != y) & ~found
        best[hit], found = z[hit], found | hit
        if t == steps or bool(found.all()):
            break
        (g,) = torch.autograd.grad(m.sum(), zin)
        g = g.detach().flatten(1).to(F64)
        if norm == "linf":
            step = g.sign()
        else:
            step = g / torch.linalg.vector_norm(g, dim=1, keepdim=True).clamp_min(1e-300)
        z = project(z - size[:, None] * step, x, lo, hi, eps, norm)
    return found, best


def _witnesses(model: nn.Module, x: torch.Tensor, y: torch.Tensor, owner: torch.Tensor,
               lo: torch.Tensor, hi: torch.Tensor, *, eps: float, norm: str, steps: int,
               size: torch.Tensor) -> dict[int, torch.Tensor]:
    """Verified witnesses {sample: point in x's shape and dtype} found in the boxes."""
    flat = x.flatten(1).to(F64)
    found, pts = search(model, x, flat[owner], y[owner], lo, hi, eps=eps, norm=norm,
                        steps=steps, size=size)
    out: dict[int, torch.Tensor] = {}
    if not bool(found.any()):
        return out
    idx = found.nonzero().squeeze(1)
    cand = pts[idx].reshape(-1, *x.shape[1:]).to(x.dtype)
    ok = verify_witness(model, x[owner[idx]], y[owner[idx]], cand, eps, norm)
    for k, s in enumerate(owner[idx].tolist()):
        if bool(ok[k]) and s not in out:
            out[s] = cand[k]
    return out


def _misses_ball(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, eps: float) -> torch.Tensor:
    """bool (B,): the box holds no point of the L2 ball around x (exact distance, with
    a relative slack so that rounding never drops a box that touches the ball)."""
    gap = (lo - x).clamp_min(0) + (x - hi).clamp_min(0)
    return (gap * gap).sum(1) > eps * eps * (1 + 1e-9) + 1e-18


@dataclass
class Budget:
    """Per-sample limits of the search: rounds of splitting, open boxes, seconds."""

    rounds: int = 40
    boxes: int = 512
    seconds: float = 30.0
    search_steps: int = 20


def _drop(found: dict[int, torch.Tensor], owner: torch.Tensor, *rest: torch.Tensor
          ) -> tuple[torch.Tensor, ...]:
    """Boxes of samples without a witness."""
    keep = torch.tensor([s not in found for s in owner.tolist()], dtype=torch.bool,
                        device=owner.device)
    return (owner[keep], *(t[keep] for t in rest))


def _halve(owner: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, cut: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each box split in two at the middle of coordinate ``cut`` (its widest where that
    one has no width)."""
    rows = torch.arange(len(owner), device=owner.device)
    width = hi - lo
    flat = width[rows, cut] <= 0
    cut = torch.where(flat, width.argmax(1), cut)
    mid = (lo[rows, cut] + hi[rows, cut]) / 2
    hi1, lo2 = hi.clone(), lo.clone()
    hi1[rows, cut], lo2[rows, cut] = mid, mid
    return owner.repeat(2), torch.cat([lo, lo2]), torch.cat([hi1, hi])


def _one_eps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, todo: torch.Tensor, *,
             eps: float, norm: str, bound: Bounder, budget: Budget
             ) -> tuple[torch.Tensor, dict[int, torch.Tensor], list[str], torch.Tensor, int]:
    """Branch and bound at one eps on the samples ``todo``: (certified, witnesses,
    reasons for the undecided, seconds per sample, boxes bounded)."""
    n, flat = len(x), x.detach().flatten(1).to(F64)
    certified = torch.zeros(n, dtype=torch.bool, device=x.device)
    reasons, spent = [""] * n, torch.zeros(n, dtype=F64, device=x.device)
    owner = todo.nonzero().squeeze(1)
    lo, hi = (flat[owner] - eps).clamp(0, 1), (flat[owner] + eps).clamp(0, 1)
    t0 = time.perf_counter()
    found: dict[int, torch.Tensor] = {}
    if len(owner) and budget.search_steps and eps > 0:
        size = torch.full((len(owner),), 2.5 * eps / budget.search_steps, dtype=F64)
        found = _witnesses(model, x, y, owner, lo, hi, eps=eps, norm=norm,
                           steps=budget.search_steps, size=size)
    spent[owner] += (time.perf_counter() - t0) / max(len(owner), 1)
    owner, lo, hi = _drop(found, owner, lo, hi)
    boxes, rounds = 0, 0
    while len(owner):
        t0, alive = time.perf_counter(), owner.unique()
        if norm == "l2":
            near = ~_misses_ball(flat[owner], lo, hi, eps)
            owner, lo, hi = owner[near], lo[near], hi[near]
        bb = bound(lo, hi, y[owner])
        boxes, rounds = boxes + len(owner), rounds + 1
        live = ~bb.certified
        owner, lo, hi, cut = owner[live], lo[live], hi[live], bb.split[live]
        if len(owner):
            half = (hi - lo) / 2
            size = half.amax(1) if norm == "linf" else torch.linalg.vector_norm(half, dim=1)
            found.update(_witnesses(model, x, y, owner, lo, hi, eps=eps, norm=norm, steps=1,
                                    size=size))
            owner, lo, hi, cut = _drop(found, owner, lo, hi, cut)
        share = torch.bincount(alive, minlength=n).to(F64)
        spent += (time.perf_counter() - t0) * share / float(share.sum())
        per = torch.bincount(owner, minlength=n)
        for s in alive.tolist():
            if int(per[s]) == 0 and s not in found:
                certified[s] = True
        over = (per > 0) & ((2 * per > budget.boxes) | (spent > budget.seconds)
                            | (rounds >= budget.rounds))
        for s in over.nonzero().squeeze(1).tolist():
            reasons[s] = (f"branch and bound undecided after {rounds} rounds, "
                          f"{int(per[s])} open boxes, {float(spent[s]):.1f} s")
        stop = over[owner]
        owner, lo, hi = _halve(owner[~stop], lo[~stop], hi[~stop], cut[~stop])
    return certified, found, reasons, spent, boxes


def branch_and_bound(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                     eps: tuple[float, ...], norm: str, bound: Bounder, method: str,
                     budget: Budget, info: dict[str, Any] | None = None
                     ) -> list[CertifyResult]:
    """Certify (x, y) at every eps with ``bound`` over boxes (see the module docstring).

    Eps are processed in ascending order and a witness of a smaller ball is kept for the
    larger ones. ``radius`` is the largest eps of the list certified (a sound lower bound
    of the minimal adversarial distance), 0 for misclassified samples, NaN otherwise.
    """
    x, y = x.detach(), y.detach()
    with torch.no_grad(), frozen_eval(model):
        wrong = model(x).argmax(1) != y
    n = len(x)
    x_adv, broken = x.clone(), wrong.clone()
    out: dict[float, CertifyResult] = {}
    with frozen_eval(model):
        for e in sorted(set(eps)):
            cert, found, reasons, spent, boxes = _one_eps(
                model, x, y, ~broken, eps=e, norm=norm, bound=bound, budget=budget)
            for s, pt in found.items():
                x_adv[s], broken[s] = pt, True
            reasons = ["" if c or b else r or "undecided" for c, b, r in
                       zip(cert.tolist(), broken.tolist(), reasons)]
            out[e] = CertifyResult(
                eps=e, norm=norm, certified=cert, broken=broken.clone(),
                x_adv=x_adv.clone(), radius=spent, seconds=spent,
                method=method, reasons=tuple(reasons),
                info={**(info or {}), "boxes": boxes, "budget": vars(budget).copy()})
    best = torch.full((n,), float("nan"), dtype=F64, device=x.device)
    for e in sorted(out):
        best[out[e].certified] = e
    best[wrong] = 0.0
    return [_with_radius(out[e], best) for e in eps]


def _with_radius(res: CertifyResult, radius: torch.Tensor) -> CertifyResult:
    return CertifyResult(eps=res.eps, norm=res.norm, certified=res.certified,
                         broken=res.broken, x_adv=res.x_adv, radius=radius.clone(),
                         seconds=res.seconds, method=res.method, reasons=res.reasons,
                         info=res.info)


def chunked(bound: Bounder, size: int) -> Bounder:
    """``bound`` applied to at most ``size`` boxes at a time (its intermediates are
    (boxes, support vectors or components, features))."""

    def run(lo: torch.Tensor, hi: torch.Tensor, y: torch.Tensor) -> BoxBound:
        parts = [bound(lo[i:i + size], hi[i:i + size], y[i:i + size])
                 for i in range(0, len(lo), size)]
        if not parts:
            empty = torch.zeros(0, dtype=torch.long, device=lo.device)
            return BoxBound(empty.bool(), empty, empty.to(F64))
        return BoxBound(*(torch.cat([getattr(p, f) for p in parts])
                          for f in ("certified", "split", "margin")))

    return run
