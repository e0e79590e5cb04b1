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

from robustkit.attacks.base import (
    NORMS,
    AttackResult,
    check_inputs,
    eval_mode,
    generator,
    input_grad,
    make_result,
    project,
    register,
)
from robustkit.attacks.fgsm import ascent_direction, ascent_loss, ce_input_direction
from robustkit.attacks.pgd import margin_loss
from robustkit.attacks.variants import l2_variant
from robustkit.params import choice, integer, number

LOSSES = ("ce", "dlr", "margin")
ALPHA = 0.75  # momentum (Croce & Hein, section 3.2)


def checkpoints(steps: int) -> list[int]:
    """The iterations w_j = ceil(p_j * steps) at which APGD may halve its step:
    p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), p_j <= 1.

    Example:
        >>> checkpoints(100)
        [0, 22, 41, 57, 70, 80, 87, 93, 99]
    """
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    # round first: 0.22 * 100 is 22.000000000000004 in floating point, whose ceil is 23
    return sorted({math.ceil(round(q * steps, 9)) for q in p})


def dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None
             ) -> torch.Tensor:
    """Difference of logits ratio, to ascend (>= 3 classes; targeted >= 4).

    Untargeted: -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12); targeted:
    -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12), pi sorting the logits in
    descending order. Invariant to shifting and to positive scaling of the logits.
    """
    top = logits.topk(3 if target is None else 4, dim=1).values
    own = logits.gather(1, y[:, None]).squeeze(1)
    if target is None:
        other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
        return -(own - other) / (top[:, 0] - top[:, 2] + 1e-12)
    tgt = logits.gather(1, target[:, None]).squeeze(1)
    return -(own - tgt) / (top[:, 0] - (top[:, 2] + top[:, 3]) / 2 + 1e-12)


def loss_value(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
               loss: str) -> torch.Tensor:
    """The per-sample objective APGD ascends and ranks points by.

    For ``"ce"`` this is L = logsumexp_{j != c}(z_j - z_c) (c = y, or -L toward a target):
    CE = softplus(L) is strictly increasing in L, so ranking by L ranks by CE, and L does not
    round to 0 in float32 where CE does (margins above ~17).
    """
    if loss == "ce":
        c = (y if target is None else target)[:, None]
        lse = torch.logsumexp(logits.scatter(1, c, float("-inf")) - logits.gather(1, c), dim=1)
        return lse if target is None else -lse
    if loss == "dlr":
        return dlr_loss(logits, y, target)
    return margin_loss(logits, y, target)


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


def _start(x: torch.Tensor, eps: float, norm: str, gen: torch.Generator) -> torch.Tensor:
    """The paper's random start: uniform in the Linf box, or on the L2 sphere of radius eps
    (a Gaussian direction), then clipped to [0, 1]."""
    if norm == "linf":
        u = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * 2 - 1
        return (x + eps * u).clamp(0, 1)
    u = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    return (x + eps * ascent_direction(u, "l2")).clamp(0, 1)


def _proj(x: torch.Tensor, v: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    return (x + project(v - x, eps, norm)).clamp(0, 1)


def run_apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str,
             loss: str, steps: int, rho: float, gen: torch.Generator,
             target: torch.Tensor | None = None, stop_on_target: bool = False, eot: int = 1
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """One APGD run from a random start on every row of x (model in eval mode).

    Ascends ``loss`` (toward ``target`` when given); a row stops when misclassified
    (pred != y), or, with ``stop_on_target``, when pred == target. Returns (x_adv, success,
    best objective, iterations per row, rows evaluated in all): x_adv is the first
    successful point, else the point of highest objective.
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
    evaluated, last = n * eot, 0

    def leave(logits: torch.Tensor) -> dict[str, torch.Tensor]:
        pred = logits.argmax(1)
        done = pred == s["t"] if stop_on_target else pred != s["y"]
        if not bool(done.any()):
            return s
        rows = s["idx"][done]
        x_out[rows], success[rows], best[rows] = s["cur"][done], True, s["f"][done].to(best.dtype)
        keep = ~done
        return {k: v[keep] for k, v in s.items()}

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
            s = _checkpoint(s, k - last, rho, shape)
            last = k
    rows = s["idx"]
    x_out[rows], best[rows] = s["xmax"], s["fmax"].to(best.dtype)
    return x_out, success, best, iters, evaluated


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


def resolve_loss(loss: str, n_classes: int, targeted: bool) -> tuple[str, dict]:
    """The loss actually used and the info it adds: DLR needs >= 3 classes (targeted >= 4);
    below that the margin loss replaces it."""
    if loss == "dlr" and n_classes < (4 if targeted else 3):
        return "margin", {"loss_fallback": "margin"}
    return loss, {}


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
         seed: int = 0) -> AttackResult:
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
    _check(norm, loss, steps, restarts, rho, eot)
    if eps == 0:
        return make_result(model, x, x.clone(), y, target=target, iterations=0)
    x, gen = x.detach(), generator(seed, x.device)
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
                                         loss=used, steps=steps, rho=rho, gen=gen, target=t,
                                         stop_on_target=t is not None, eot=eot)
            better = ok | (f > best[rows])
            x_adv[rows[better]], best[rows[better]] = xa[better], f[better]
            done[rows[ok]] = True
            iters[rows] += it
            evaluated += ev
    info.update(loss=used, evaluations=evaluated)
    return make_result(model, x, x_adv, y, target=target, iterations=iters, info=info)


apgd_l2 = l2_variant(apgd, "apgd_l2", title="APGD in the L2 ball", example="steps=5")


def _check(norm: str, loss: str, steps: int, restarts: int, rho: float, eot: int) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    for name, value in (("steps", steps), ("restarts", restarts), ("eot", eot)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not isinstance(rho, (int, float)) or not 0 < rho <= 1:
        raise ValueError(f"rho must be a number in (0, 1], got {rho!r}")
