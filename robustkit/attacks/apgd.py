"""Auto-PGD (APGD): PGD with momentum and a step size that halves at fixed checkpoints when
progress stalls, restarting from the best point; CE, DLR and targeted-DLR losses.

Every sample leaves the computation as soon as it is misclassified (or reaches its target):
each iteration runs one forward and one backward pass on the still-robust rows only.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from robustkit.attacks.apgd_common import check_params, checkpoints, loss_value, resolve_loss
from robustkit.attacks.base import (
    AttackResult,
    check_inputs,
    eval_mode,
    input_grad,
    make_result,
    project,
    register,
)
from robustkit.attacks.fgsm import ascent_direction, ascent_loss, ce_input_direction
from robustkit.attacks.rng import SampleRNG, rand, randn, sample_rng
from robustkit.attacks.variants import l2_variant
from robustkit.params import choice, integer, number

ALPHA = 0.75  # momentum (Croce & Hein, section 3.2)


def value_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               target: torch.Tensor | None, loss: str, *, need_grad: bool = True,
               eot: int = 1) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(objective, its input gradient up to a positive factor per sample or None, logits).

    With ``eot > 1`` the logits, objective and gradient are averaged over ``eot`` passes
    (expectation over transformation, for models that draw randomness in forward).
    """
    if not need_grad:
        with torch.no_grad():
            logits = torch.stack([model(x) for _ in range(eot)]).mean(0) if eot > 1 else model(x)
        return loss_value(logits, y, target, loss), None, logits
    if loss == "ce" and eot == 1:
        g, logits = ce_input_direction(model, x, y, target)
        return loss_value(logits, y, target, loss), g, logits
    # the exact CE for averaging (ce_input_direction's per-sample factor differs per draw)
    fn: Callable[[torch.Tensor], torch.Tensor] = (
        (lambda z: ascent_loss(z, y, target)) if loss == "ce"
        else (lambda z: loss_value(z, y, target, loss)))
    grads, outs = zip(*(input_grad(model, x, fn) for _ in range(eot)))
    logits = torch.stack(outs).mean(0)
    return loss_value(logits, y, target, loss), torch.stack(grads).mean(0), logits


def _start(x: torch.Tensor, eps: float, norm: str, gen: SampleRNG | torch.Generator) -> torch.Tensor:
    """The paper's random start: uniform in the Linf box, or on the L2 sphere of radius eps
    (a Gaussian direction), then clipped to [0, 1]."""
    if norm == "linf":
        u = rand(gen, x.shape, device=x.device, dtype=x.dtype) * 2 - 1
        return (x + eps * u).clamp(0, 1)
    u = randn(gen, x.shape, device=x.device, dtype=x.dtype)
    return (x + eps * ascent_direction(u, "l2")).clamp(0, 1)


def _proj(x: torch.Tensor, v: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    return (x + project(v - x, eps, norm)).clamp(0, 1)


def run_apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str,
             loss: str, steps: int, rho: float, gen: SampleRNG | torch.Generator,
             target: torch.Tensor | None = None, stop_on_target: bool = False, eot: int = 1,
             group: torch.Tensor | None = None, stall: float = 0.0
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """One APGD run from a random start on every row of x (model in eval mode).

    Ascends ``loss`` (toward ``target`` when given); a row stops when misclassified
    (pred != y), or, with ``stop_on_target``, when pred == target. ``group`` (int64 per row,
    optional): rows that attack the same sample (toward different targets) share a group,
    and all of them stop when one succeeds (the others unsuccessful, at their best point).
    ``stall`` > 0: from the checkpoint at half the steps on, a row whose best objective rose
    by at most ``stall * |best at the previous checkpoint|`` since then stops there
    (unsuccessful, at its best point): it has converged (the lean chain's budget).
    Returns (x_adv, success, best objective, iterations per row, rows evaluated in all):
    x_adv is the first successful point, else the point of highest objective.
    """
    n, shape = len(x), (-1, *([1] * (x.dim() - 1)))
    x_out, best = x.clone(), torch.full((n,), -math.inf, device=x.device, dtype=x.dtype)
    success = torch.zeros(n, dtype=torch.bool, device=x.device)
    iters = torch.zeros(n, dtype=torch.long, device=x.device)
    checks = set(checkpoints(steps)) - {0}

    cur = _start(x, eps, norm, gen)
    f, g, logits = value_grad(model, cur, y, target, loss, eot=eot)
    if g is None:  # value_grad returns a gradient unless asked not to
        raise RuntimeError("apgd: the first step got no input gradient")
    s: dict[str, torch.Tensor] = {
        "idx": torch.arange(n, device=x.device), "x": x, "y": y, "cur": cur, "prev": cur,
        "g": g, "f": f, "fmax": f, "xmax": cur, "gmax": g,
        "eta": torch.full((n,), 2.0 * eps, device=x.device, dtype=x.dtype),
        "incr": torch.zeros(n, dtype=torch.long, device=x.device), "fchk": f,
        "reduced": torch.zeros(n, dtype=torch.bool, device=x.device)}
    if target is not None:
        s["t"] = target
    if group is not None:
        s["group"] = group
    evaluated, last = n * eot, 0

    def leave(logits: torch.Tensor) -> dict[str, torch.Tensor]:
        pred = logits.argmax(1)
        done = pred == s["t"] if stop_on_target else pred != s["y"]
        if not bool(done.any()):
            return s
        rows = s["idx"][done]
        x_out[rows], success[rows], best[rows] = s["cur"][done], True, s["f"][done].to(best.dtype)
        left = {k: v[~done] for k, v in s.items()}
        if group is None:
            return left
        # the sample is broken: its other rows stop too, unsuccessful at their best point
        return _stop(left, torch.isin(left["group"], s["group"][done]), x_out, best)

    s = leave(logits)
    for k in range(1, steps + 1):
        if not len(s["idx"]):
            break
        cur, prev, xs = s["cur"], s["prev"], s["x"]
        z = _proj(xs, cur + s["eta"].view(shape) * ascent_direction(s["g"], norm), eps, norm)
        a = 1.0 if k == 1 else ALPHA
        new = _proj(xs, cur + a * (z - cur) + (1 - a) * (cur - prev), eps, norm)
        f, g, logits = value_grad(model, new, s["y"], s.get("t"), loss, need_grad=k < steps,
                                  eot=eot)
        evaluated += len(new) * eot
        iters[s["idx"]] += 1
        better = f > s["fmax"]
        s.update(incr=s["incr"] + (f > s["f"]), prev=cur, cur=new, f=f,
                 fmax=torch.where(better, f, s["fmax"]),
                 xmax=torch.where(better.view(shape), new, s["xmax"]))
        if g is not None:
            s.update(g=g, gmax=torch.where(better.view(shape), g, s["gmax"]))
        s = leave(logits)
        if k in checks and k < steps and len(s["idx"]):
            if stall > 0 and 2 * k >= steps:
                s = _stop(s, s["fmax"] - s["fchk"] <= stall * s["fchk"].abs(), x_out, best)
            s = _checkpoint(s, k - last, rho, shape)
            last = k
    rows = s["idx"]
    x_out[rows], best[rows] = s["xmax"], s["fmax"].to(best.dtype)
    return x_out, success, best, iters, evaluated


def _stop(s: dict[str, torch.Tensor], done: torch.Tensor, x_out: torch.Tensor,
          best: torch.Tensor) -> dict[str, torch.Tensor]:
    """Rows ``done`` leave unsuccessful, at their best point."""
    if not bool(done.any()):
        return s
    rows = s["idx"][done]
    x_out[rows], best[rows] = s["xmax"][done], s["fmax"][done].to(best.dtype)
    return {k: v[~done] for k, v in s.items()}


def _checkpoint(s: dict[str, torch.Tensor], since: int, rho: float, shape: tuple
                ) -> dict[str, torch.Tensor]:
    """Halve the step and restart from the best point where the objective rose in fewer
    than rho * since iterations, or where neither the step nor the best value changed
    since the previous checkpoint."""
    halve = (s["incr"] < rho * since) | (~s["reduced"] & (s["fmax"] <= s["fchk"]))
    h = halve.view(shape)
    s.update(eta=torch.where(halve, s["eta"] / 2, s["eta"]),
             cur=torch.where(h, s["xmax"], s["cur"]), g=torch.where(h, s["gmax"], s["g"]),
             f=torch.where(halve, s["fmax"], s["f"]), reduced=halve, fchk=s["fmax"],
             incr=torch.zeros_like(s["incr"]))
    return s


RULES = {"norm": choice("linf", "l2"),
         "loss": choice("ce", "dlr", "margin"),
         "steps": integer(1),
         "restarts": integer(1),
         "rho": number(0, 1, open_low=True),
         "eot": integer(1)}


@register("apgd", norm="linf", rules=RULES)
def apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
         norm: str = "linf", loss: str = "ce", steps: int = 100, restarts: int = 1,
         rho: float = 0.75, target: torch.Tensor | None = None, eot: int = 1,
         seed: int = 0, sample_ids: torch.Tensor | None = None) -> AttackResult:
    """Auto-PGD in the Linf or L2 ball of radius eps.

    Step size 2 * eps at first (both norms), momentum 0.75, and at each checkpoint of
    :func:`checkpoints` the step halves (restarting from the best point) where the
    objective rose in fewer than ``rho`` of the iterations since the last checkpoint, or
    where neither step nor best value changed. Samples already misclassified (or on their
    target) are returned unchanged; the others stop at their first success, else keep
    their point of highest loss over all restarts.

    Args:
        model: classifier returning logits (N, K); left unchanged.
        x: inputs (N, ...) in [0, 1].
        y: int64 (N,) true labels.
        eps: budget (>= 0) in ``norm``; ``eps=0`` returns x bitwise.
        norm: ``"linf"`` or ``"l2"``.
        loss: ``"ce"``, ``"dlr"`` (margin when K < 3, or K < 4 targeted: recorded in
            ``info["loss_fallback"]``) or ``"margin"``.
        steps: iterations per restart (>= 1).
        restarts: runs from new random starts on the samples not yet broken (>= 1).
        rho: share of iterations the loss must rise in between checkpoints (0 < rho <= 1).
        target: int64 (N,) target labels: descend toward them, success = pred == target.
        eot: gradient and loss averaged over this many passes (stochastic models).
        seed: seeds the random starts.
        sample_ids: int64 (N,) the samples' ids, default ``arange(N)``: random draws
            are per sample (:mod:`robustkit.attacks.rng`), not per batch.

    Returns:
        AttackResult; ``iterations`` counts each sample's gradient steps; ``info`` has
        ``loss`` (used), ``evaluations`` (rows passed forward and backward in all).

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x, y = torch.rand(5, 4), torch.zeros(5, dtype=torch.long)
        >>> float(apgd(model, x, y, eps=0.1, steps=5).linf.max()) <= 0.1 + 1e-6
        True

    Reference: Croce & Hein, "Reliable evaluation of adversarial robustness with an
    ensemble of diverse parameter-free attacks", ICML 2020 (arXiv:2003.01690).
    """
    check_inputs(model, x, y, eps=eps, target=target)
    check_params(norm, loss, steps, restarts, rho, eot)
    if eps == 0:
        return make_result(model, x, x.clone(), y, target=target, iterations=0)
    x, gen = x.detach(), sample_rng(seed, x, sample_ids, "apgd")
    n = len(x)
    with eval_mode(model):
        with torch.no_grad():
            clean = model(x)
        used, info = resolve_loss(loss, clean.shape[1], target is not None)
        pred = clean.argmax(1)
        done = pred == target if target is not None else pred != y
        x_adv, best = x.clone(), torch.full((n,), -math.inf, device=x.device, dtype=x.dtype)
        iters = torch.zeros(n, dtype=torch.long, device=x.device)
        evaluated = n
        for _ in range(restarts):
            rows = (~done).nonzero().squeeze(1)
            if not len(rows):
                break
            t = None if target is None else target[rows]
            xa, ok, f, it, ev = run_apgd(model, x[rows], y[rows], eps=eps, norm=norm,
                                         loss=used, steps=steps, rho=rho, gen=gen.take(rows),
                                         target=t,
                                         stop_on_target=t is not None, eot=eot)
            better = ok | (f > best[rows])
            x_adv[rows[better]], best[rows[better]] = xa[better], f[better]
            done[rows[ok]] = True
            iters[rows] += it
            evaluated += ev
    info.update(loss=used, evaluations=evaluated)
    return make_result(model, x, x_adv, y, target=target, iterations=iters, info=info)


apgd_l2 = l2_variant(apgd, "apgd_l2", title="APGD in the L2 ball", example="steps=5")
