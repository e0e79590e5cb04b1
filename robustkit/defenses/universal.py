"""Universal adversarial training, the "simultaneous" variant of Shafahi et al.

One perturbation v (the shape of one input, in the Linf ball of radius eps) is shared by
all inputs. Each mini-batch trains the weights on clamp(x + v, 0, 1); the same backward
pass also gives the gradient of the batch loss with respect to v, and v then takes one
ascent step: v <- clip_eps(v + step * sign(grad_v)) (or a plain gradient step). So the
weights descend and v ascends at the same point, for about the cost of plain training.
The gradient reaching v passes the clamp to [0, 1] straight through (as in the
``uap_sgd`` attack), so pixels that are clamped in one batch still steer v.

With ``clip`` set, v ascends the clipped loss min(CE, clip) of Shafahi et al.'s SGD
attack instead: samples whose loss already exceeds ``clip`` (mostly: already fooled) stop
pulling v, so v keeps looking for the samples it does not fool yet. The per-sample input
gradients needed for that come out of the same backward pass (``_Share`` below).

Epochs: the weights chase a target that moves every batch, so they fit more slowly than
in plain training. On the 8x8 digits at xi 0.2, the paper's setting given the CNN's own
30 epochs ends at 0.86 training accuracy (seed 0; plain: 1.0) and 0.83-0.89 test accuracy
(plain: 0.97-0.98, seeds 0-2); with 100 epochs, clip 3 and mix 0.5 it matches the plain
model (0.98) and a recomputed UAP fools it 4x less often. Budget about 3x the plain
epochs (``epochs=``); benchmarks/defenses.py has the measurements.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustkit.defenses.adversarial import GRADIENT_FAMILIES
from robustkit.defenses.base import (
    DefenseContext,
    DefenseResult,
    register,
    step_seed,
    with_training,
)
from robustkit.defenses.checkpoint import fingerprint, fit_resumable
from robustkit.params import choice, number, positive

UPDATES = ("sign", "grad")


@register("universal", families=GRADIENT_FAMILIES, defaults={
    "step": None, "update": "sign", "clip": None, "mix": 1.0, "epochs": None, "lr": None,
    "schedule": None, "batch_size": None}, rules={
    "step": positive(none=True), "update": choice(*UPDATES), "clip": positive(none=True),
    "mix": number(0, 1, open_low=True)})
def universal(ctx: DefenseContext, x: torch.Tensor, y: torch.Tensor, *, eps: float,
              step: float | None, update: str, clip: float | None, mix: float,
              **train: Any) -> DefenseResult:
    """Train against one shared perturbation v that ascends while the weights descend.

    Args:
        ctx: model family, seed, device, checkpoint folder (see ``DefenseContext``).
        x: (N, ...) training inputs in [0, 1]; y: (N,) int64 labels.
        eps: Linf radius xi of the universal perturbation.
        step: ascent step of v per mini-batch; default eps (the FGSM-style step of the
            paper: v moves to the sign of each batch's gradient, then is clipped).
        update: ``"sign"`` (FGSM-like step, the paper's choice) or ``"grad"`` (the batch
            gradient scaled to Linf norm ``step``).
        clip: v ascends min(CE, clip) per sample (None: plain CE, the paper's UAT).
        mix: fraction of each batch (seeded per step) trained on x + v, the rest on
            clean x (1.0: the paper's UAT). Below 1 it keeps clean accuracy when eps is
            large relative to the data (MNIST-scale eps 0.2-0.3).
        **train: ``epochs``, ``lr``, ``schedule``, ``batch_size`` overriding the model's
            own training settings (default: the model's). Give it more epochs than plain
            training (about 3x on digits, see the module docstring).

    Returns:
        DefenseResult; ``info["v"]`` is the final training perturbation (shape of one
        input), ``history`` records its norms per epoch.

    Example:
        >>> from robustkit import load_dataset
        >>> from robustkit.defenses import defend
        >>> x, y, _ = load_dataset("digits")
        >>> res = defend("universal", "mlp", x, y, eps=0.2, model_params={"epochs": 2})
        >>> tuple(res.info["v"].shape)
        (1, 8, 8)

    Reference: Shafahi, Najibi, Xu, Dickerson, Davis & Goldstein, "Universal adversarial
    training", AAAI 2020 (arXiv:1811.11304). Hardens against universal perturbations
    only; per-sample attacks (FGSM, PGD) are not defended.
    """
    size = eps if step is None else float(step)
    _check(size, update, clip, mix)
    ctx = with_training(ctx, train)
    params = {"eps": eps, "step": size, "update": update, "clip": clip, "mix": float(mix),
              **{k: ctx.spec.params[k] for k in train}}
    state: dict[str, torch.Tensor] = {"v": torch.zeros(x.shape[1:], device=ctx.device)}
    pending: dict[str, Any] = {}  # per-sample grads, logits and labels of the last batch

    def ascend() -> None:
        # Apply the ascent step from the last backward pass, if there was one.
        grads, logits = pending.pop("grads", None), pending.pop("logits", None)
        yb = pending.pop("y", None)
        v = state["v"]
        v.grad = None
        if not grads:
            return
        g = grads[0]
        if clip is not None and logits is not None:
            keep = F.cross_entropy(logits, yb, reduction="none") < clip
            g = g * keep.view(-1, *([1] * (g.dim() - 1)))
        g = g.sum(0)
        with torch.no_grad():
            d = g.sign() if update == "sign" else g / g.abs().amax().clamp_min(1e-12)
            v.add_(size * d).clamp_(-eps, eps)

    def perturb(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor, step_i: int) -> torch.Tensor:
        ascend()
        v = state["v"]
        if not v.requires_grad:
            v.requires_grad_(True)
        pending["grads"], pending["y"] = [], yb
        vv = _Share.apply(v, len(xb), pending["grads"])
        if mix < 1:
            gen = torch.Generator().manual_seed(step_seed(ctx.seed, step_i))
            keep = (torch.rand(len(xb), generator=gen) < mix).to(xb.device, xb.dtype)
            vv = vv * keep.view(-1, *([1] * (xb.dim() - 1)))
        xa = xb + vv
        # Forward: clamp to [0, 1]. Backward: straight through (as the uap_sgd attack
        # does), so coordinates clamped in this batch still tell v where to go.
        return xa + (xa.clamp(0, 1) - xa).detach()

    def watch(epoch: int, m: nn.Module, st: dict) -> tuple[bool, dict[str, Any]]:
        ascend()  # so that the checkpoint holds v after this epoch's last step
        v = st["v"].detach()
        return False, {"v_linf": float(v.abs().max()), "v_l2": float(v.norm())}

    def keep_logits(m: nn.Module, inputs: Any, out: torch.Tensor) -> None:
        pending["logits"] = out.detach()

    # The model is built inside fit_resumable; hook every module it builds via perturb.
    hooks: list[Any] = []

    def perturb_hooked(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor, step_i: int
                       ) -> torch.Tensor:
        if not hooks:
            hooks.append(m.register_forward_hook(keep_logits))
        return perturb(m, xb, yb, step_i)

    try:
        module, history, state = fit_resumable(
            ctx, x, y, fingerprint=fingerprint(ctx, "universal", x, y, params),
            perturb=perturb_hooked, watch=watch, state=state, desc="universal")
    finally:
        for h in hooks:
            h.remove()
    info = {"v": state["v"].detach().cpu().clone(), "n_fit": len(y)}
    return DefenseResult(module, "universal", params, sum(h["seconds"] for h in history),
                         tuple(history), info)


class _Share(torch.autograd.Function):
    """v (one input) -> v repeated for n samples; the backward pass records the
    per-sample gradients (n, ...) in ``sink`` and returns their sum to v."""

    @staticmethod
    def forward(ctx: Any, v: torch.Tensor, n: int, sink: list) -> torch.Tensor:
        ctx.sink = sink
        return v.unsqueeze(0).repeat(n, *([1] * v.dim()))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        ctx.sink.append(grad.detach())
        return grad.sum(0), None, None


def _check(size: float, update: str, clip: float | None, mix: float) -> None:
    if not size > 0:
        raise ValueError(f"step must be a number > 0, got {size!r}")
    if update not in UPDATES:
        raise ValueError(f"update must be one of {UPDATES}, got {update!r}")
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float))
                             or not clip > 0):
        raise ValueError(f"clip must be None or a number > 0, got {clip!r}")
    if isinstance(mix, bool) or not isinstance(mix, (int, float)) or not 0 < mix <= 1:
        raise ValueError(f"mix must be a number in (0, 1], got {mix!r}")
