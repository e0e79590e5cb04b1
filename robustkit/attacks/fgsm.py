"""Single-step gradient attacks: FGSM (Linf) and FGM (L2), untargeted or targeted, with an
optional random start (RS-FGSM). The step, the random start and the loss here are the
building blocks PGD loops over.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from robustkit.attacks.base import (
    AttackResult,
    check_inputs,
    eval_mode,
    make_result,
    project,
    register,
)
from robustkit.attacks.rng import SampleRNG, rand, randn, sample_rng
from robustkit.params import number

FAST_RULES = {"alpha": number(0, none=True)}


def ascent_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """Steepest-ascent direction of unit ``norm`` for per-sample gradients (N, ...).

    Linf: ``sign(grad)``; L2: ``grad / ||grad||_2`` per sample (zero where the gradient is
    zero, so a flat loss gives no step instead of NaN).
    """
    if norm == "linf":
        return grad.sign()
    if norm == "l2":
        # Scale by the largest entry first: saturated softmaxes give gradients ~1e-30
        # whose squares underflow, so a plain norm would be 0 and the step explode.
        shape = (-1, *([1] * (grad.dim() - 1)))
        top = grad.flatten(1).abs().amax(dim=1).view(shape)
        g = grad / top.clamp_min(torch.finfo(grad.dtype).tiny)
        g = torch.where(top > 0, g, torch.zeros_like(g))
        return g / g.flatten(1).norm(dim=1).view(shape).clamp_min(1.0)
    raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")


def random_delta(x: torch.Tensor, eps: float, norm: str,
                 gen: SampleRNG | torch.Generator) -> torch.Tensor:
    """A random start: uniform in the Linf box, or uniform in the L2 ball, of radius eps,
    cut so that x + delta stays in [0, 1]."""
    if norm == "linf":
        delta = (rand(gen, x.shape, device=x.device, dtype=x.dtype) * 2 - 1) * eps
    elif norm == "l2":
        d = math.prod(x.shape[1:])
        u = randn(gen, x.shape, device=x.device, dtype=x.dtype)
        r = rand(gen, (len(x),), device=x.device, dtype=x.dtype) ** (1.0 / d)
        delta = ascent_direction(u, "l2") * (eps * r).view(-1, *([1] * (x.dim() - 1)))
    else:
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    return (x + delta).clamp(0, 1) - x


def ascent_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None
                ) -> torch.Tensor:
    """Per-sample cross-entropy to ascend: CE(y) untargeted, -CE(target) targeted."""
    if target is None:
        return F.cross_entropy(logits, y, reduction="none")
    return -F.cross_entropy(logits, target, reduction="none")


def ce_logit_direction(logits: torch.Tensor, y: torch.Tensor,
                       target: torch.Tensor | None = None) -> torch.Tensor:
    """The gradient of the summed ascent loss (``ascent_loss(...).sum()``) with respect to
    the logits, divided per sample by a positive number, computed without cancellation.

    Untargeted, d CE / dz = p - onehot(y) = S (q - onehot(y)) with S = 1 - p_y and q the
    softmax over the other classes (q_y = 0); this returns q - onehot(y). Targeted, the
    gradient of -CE(target) is S_t (onehot(target) - q) over the classes other than the
    target. Per-sample positive factors change neither sign(grad) nor grad / ||grad||, so
    every sign or normalized step (FGSM, FGM, PGD) is the exact gradient's.

    Why not autograd: in float32, p_y rounds to 1 once the other classes' share is below
    6e-8 (a logit margin of ~17), so autograd's p_y - 1 is 0 and the input gradient loses
    its true-class term: its sign is then not the gradient's. On our MNIST CNN that is 357 of
    1,000 test images, and FGSM at 0.3 fools 92.4% of the correct ones with autograd's
    float32 gradient (torchattacks, foolbox and ART alike) against 99.2% with the float64
    gradient's sign, which this reproduces in float32. Also faster on CPU: torch's
    log_softmax over 10 classes is a slow per-row path (~50 us for 450 x 10, and its
    backward as much again); these few elementwise/reduction ops take 20-30 us.
    """
    with torch.no_grad():
        cls = (y if target is None else target).view(-1, 1)
        z = logits.detach().scatter(1, cls, float("-inf"))
        g = (z - z.amax(1, keepdim=True)).exp_()
        g /= g.sum(1, keepdim=True)
        g.scatter_(1, cls, -1.0)
        return g if target is None else g.neg_()


def ce_input_direction(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                       target: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(gradient of ``ascent_loss(model(x), y, target).sum()`` with respect to x up to a
    positive factor per sample, logits): one forward pass, one backward pass from
    ``ce_logit_direction``. The model must already be in the mode wanted (attacks: eval)."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    (grad,) = torch.autograd.grad(logits, x, ce_logit_direction(logits, y, target))
    return grad, logits.detach()


def _fast_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                   norm: str, target: torch.Tensor | None, random_start: bool,
                   alpha: float | None, seed: int, predict: bool,
                   sample_ids: torch.Tensor | None = None) -> AttackResult:
    check_inputs(model, x, y, eps=eps, target=target)
    if alpha is not None and (not isinstance(alpha, (int, float)) or not alpha >= 0):
        raise ValueError(f"alpha must be a number >= 0, got {alpha!r}")
    if eps == 0:
        return make_result(model, x, x.clone(), y, target=target, predict=predict)
    x = x.detach()
    step = alpha if alpha is not None else (1.25 * eps if random_start else eps)
    delta = random_delta(x, eps, norm, sample_rng(seed, x, sample_ids, "fgsm")) if random_start else None
    x0 = x if delta is None else x + delta
    with eval_mode(model):
        grad, _ = ce_input_direction(model, x0, y, target)
    direction = grad.sign_() if norm == "linf" else ascent_direction(grad, norm)
    moved = torch.add(x0, direction, alpha=step)
    if delta is not None or step > eps:
        moved = x + project(moved - x, eps, norm)
    return make_result(model, x, moved.clamp_(0, 1), y, target=target, predict=predict)


@register("fgsm", norm="linf", rules=FAST_RULES)
def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
         target: torch.Tensor | None = None, random_start: bool = False,
         alpha: float | None = None, seed: int = 0, predict: bool = True,
         sample_ids: torch.Tensor | None = None) -> AttackResult:
    """Fast gradient sign method: one Linf step of size eps along sign(grad CE).

    Costs one forward and one backward pass, plus one forward on x_adv to fill
    ``success``/``pred`` (skip it with ``predict=False`` when the caller predicts anyway).

    Args:
        model: classifier returning logits (N, K); left unchanged.
        x: inputs (N, ...) in [0, 1].
        y: int64 (N,) true labels.
        eps: Linf budget (>= 0); ``eps=0`` returns x bitwise.
        target: int64 (N,) target labels: the step descends CE toward them.
        random_start: RS-FGSM: start uniformly in the eps box, step ``alpha``, then
            project back onto the box and [0, 1].
        alpha: step size; default eps, or 1.25 * eps with ``random_start``.
        seed: seeds the random start.
        sample_ids: int64 (N,) the samples' ids, default ``arange(N)``: random draws
            are per sample (:mod:`robustkit.attacks.rng`), not per batch.
        predict: compute predictions on x_adv (one extra forward pass).

    Returns:
        AttackResult; x_adv = clip(x + eps * sign(grad), 0, 1) without random start.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x, y = torch.rand(5, 4), torch.zeros(5, dtype=torch.long)
        >>> float(fgsm(model, x, y, eps=0.1).linf.max()) <= 0.1 + 1e-6
        True

    Reference: Goodfellow, Shlens & Szegedy, ICLR 2015 (arXiv:1412.6572); random start:
    Wong, Rice & Kolter, ICLR 2020 (arXiv:2001.03994).
    """
    return _fast_gradient(model, x, y, eps=eps, norm="linf", target=target,
                          random_start=random_start, alpha=alpha, seed=seed, predict=predict,
                          sample_ids=sample_ids)


@register("fgm", norm="l2", rules=FAST_RULES)
def fgm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
        target: torch.Tensor | None = None, random_start: bool = False,
        alpha: float | None = None, seed: int = 0, predict: bool = True,
         sample_ids: torch.Tensor | None = None) -> AttackResult:
    """Fast gradient method: one L2 step of length eps along grad CE / ||grad CE||_2.

    Args:
        model: classifier returning logits (N, K); left unchanged.
        x: inputs (N, ...) in [0, 1].
        y: int64 (N,) true labels.
        eps: L2 budget per sample (>= 0); ``eps=0`` returns x bitwise.
        target: int64 (N,) target labels: the step descends CE toward them.
        random_start: start uniformly in the L2 ball, step ``alpha``, project back.
        alpha: step length; default eps, or 1.25 * eps with ``random_start``.
        seed: seeds the random start.
        sample_ids: int64 (N,) the samples' ids, default ``arange(N)``: random draws
            are per sample (:mod:`robustkit.attacks.rng`), not per batch.
        predict: compute predictions on x_adv (one extra forward pass).

    Returns:
        AttackResult; samples with a zero gradient are left unchanged.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x, y = torch.full((5, 4), 0.5), torch.zeros(5, dtype=torch.long)
        >>> r = fgm(model, x, y, eps=0.2)
        >>> bool(torch.allclose(r.l2, torch.full((5,), 0.2)))
        True

    Reference: Goodfellow, Shlens & Szegedy, ICLR 2015 (arXiv:1412.6572), L2 variant as in
    Miyato et al., ICLR 2017 (arXiv:1605.07725).
    """
    return _fast_gradient(model, x, y, eps=eps, norm="l2", target=target,
                          random_start=random_start, alpha=alpha, seed=seed, predict=predict,
                          sample_ids=sample_ids)
