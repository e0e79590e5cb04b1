"""Projected gradient descent (Madry et al.): a loop of FGSM-like steps plus a projection
onto the eps ball and [0, 1], with random restarts keeping each sample's worst case."""
from __future__ import annotations

import torch
from torch import nn

from robustkit.attacks.base import (
    NORMS,
    AttackResult,
    check_inputs,
    check_logits,
    eval_mode,
    input_grad,
    make_result,
    project,
    register,
)
from robustkit.attacks.fgsm import (
    ascent_direction,
    ascent_loss,
    ce_input_direction,
    random_delta,
)
from robustkit.attacks.rng import sample_rng
from robustkit.attacks.variants import l2_variant
from robustkit.params import choice, integer, positive

LOSSES = ("ce", "margin")
RULES = {"norm": choice(*NORMS), "steps": integer(1), "restarts": integer(1),
         "step_size": positive(none=True), "loss": choice(*LOSSES)}


def margin_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None
                ) -> torch.Tensor:
    """Per-sample CW-style margin to ascend: max_{j != y} z_j - z_y (untargeted) or
    z_t - max_{j != t} z_j (targeted); positive once the attack succeeds."""
    label = y if target is None else target
    own = logits.gather(1, label[:, None]).squeeze(1)
    other = logits.scatter(1, label[:, None], float("-inf")).amax(1)
    return other - own if target is None else own - other


def pgd_step(model: nn.Module, x: torch.Tensor, delta: torch.Tensor, y: torch.Tensor, *,
             eps: float, step_size: float, norm: str, loss: str,
             target: torch.Tensor | None = None) -> torch.Tensor:
    """One PGD iteration: ascend the loss at x + delta, project onto the eps ball and onto
    [0, 1]. Returns the new delta (the model must already be in eval mode)."""
    if loss == "ce":
        grad, _ = ce_input_direction(model, x + delta, y, target)
    else:
        grad, _ = input_grad(model, x + delta, lambda z: margin_loss(z, y, target))
    delta = project(delta + step_size * ascent_direction(grad, norm), eps, norm)
    return (x + delta).clamp(0, 1) - x


@register("pgd", norm="linf", rules=RULES)
def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
        steps: int = 10, step_size: float | None = None, random_start: bool = True,
        restarts: int = 1, loss: str = "ce", target: torch.Tensor | None = None,
        seed: int = 0, sample_ids: torch.Tensor | None = None) -> AttackResult:
    """Projected gradient descent in the Linf or L2 ball of radius eps.

    Each restart starts at a random point of the ball (or at x without ``random_start``)
    and takes ``steps`` projected steps. Per sample the result keeps the restart that
    succeeds, else the one with the highest loss (the pointwise worst case).

    Args:
        model: classifier returning logits (N, K); left unchanged.
        x: inputs (N, ...) in [0, 1].
        y: int64 (N,) true labels.
        eps: budget (>= 0) in ``norm``; ``eps=0`` returns x bitwise.
        norm: ``"linf"`` or ``"l2"``.
        steps: iterations per restart (>= 1).
        step_size: step per iteration; default 2.5 * eps / steps (Madry et al.).
        random_start: start uniformly in the ball instead of at x.
        restarts: independent runs (>= 1) from different random starts.
        loss: ``"ce"`` (cross-entropy) or ``"margin"`` (max_{j != y} z_j - z_y, as in C&W).
        target: int64 (N,) target labels for a targeted attack.
        seed: seeds the random starts.
        sample_ids: int64 (N,) the samples' ids, default ``arange(N)``: random draws
            are per sample (:mod:`robustkit.attacks.rng`), not per batch.

    Returns:
        AttackResult; ``iterations`` counts gradient steps (steps * restarts).

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x, y = torch.rand(5, 4), torch.zeros(5, dtype=torch.long)
        >>> float(pgd(model, x, y, eps=0.1, steps=5).linf.max()) <= 0.1 + 1e-6
        True

    Reference: Madry et al., "Towards Deep Learning Models Resistant to Adversarial
    Attacks", ICLR 2018 (arXiv:1706.06083).
    """
    check_inputs(model, x, y, eps=eps, target=target)
    _check_params(norm, steps, step_size, restarts, loss)
    if eps == 0:
        return make_result(model, x, x.clone(), y, target=target, iterations=0)
    size = step_size if step_size is not None else 2.5 * eps / steps
    gen = sample_rng(seed, x, sample_ids, "pgd")
    x = x.detach()

    def restart() -> Run:
        delta = random_delta(x, eps, norm, gen) if random_start else torch.zeros_like(x)
        for _ in range(steps):
            delta = pgd_step(model, x, delta, y, eps=eps, step_size=size, norm=norm,
                             loss=loss, target=target)
        x_adv = (x + delta).clamp(0, 1)
        with torch.no_grad():
            logits = check_logits(model(x_adv), len(x_adv))
        pred = logits.argmax(1)
        succ = pred == target if target is not None else pred != y
        value = ascent_loss(logits, y, target) if loss == "ce" else margin_loss(
            logits, y, target)
        return x_adv, succ, value, pred

    with eval_mode(model):
        best = restart()
        for _ in range(restarts - 1):
            best = keep_worst(best, restart())
    return make_result(model, x, best[0], y, target=target, iterations=steps * restarts,
                       pred=best[3])


# One restart's outcome: (x_adv, success, loss, pred), per sample.
Run = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def keep_worst(best: Run, new: Run) -> Run:
    """Per sample, keep the run that succeeds, else the one with the higher loss."""
    better = (new[1] & ~best[1]) | ((new[1] == best[1]) & (new[2] > best[2]))
    shape = (-1, *([1] * (best[0].dim() - 1)))
    return (torch.where(better.view(shape), new[0], best[0]),
            torch.where(better, new[1], best[1]), torch.where(better, new[2], best[2]),
            torch.where(better, new[3], best[3]))


pgd_l2 = l2_variant(pgd, "pgd_l2", title="PGD in the L2 ball", example="steps=5")


def _check_params(norm: str, steps: int, step_size: float | None, restarts: int,
                  loss: str) -> None:
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    for name, value in (("steps", steps), ("restarts", restarts)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if step_size is not None and (not isinstance(step_size, (int, float)) or not step_size > 0):
        raise ValueError(f"step_size must be a number > 0, got {step_size!r}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
