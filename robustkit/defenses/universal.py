"""Universal adversarial training, the "simultaneous" variant of Shafahi et al.

One perturbation v (the shape of one input, in the Linf ball of radius eps) is shared by
all inputs. Each mini-batch trains the weights on clamp(x + v, 0, 1); the same backward
pass also gives the gradient of the batch loss with respect to v, and v then takes one
ascent step: v <- clip_eps(v + step * sign(grad_v)) (or a plain gradient step). So the
weights descend and v ascends at the same point, for about the cost of plain training.
"""
from __future__ import annotations

from typing import Any

import torch

from robustkit.defenses.adversarial import GRADIENT_FAMILIES
from robustkit.defenses.base import DefenseContext, DefenseResult, register, with_training
from robustkit.defenses.checkpoint import fingerprint, fit_resumable

UPDATES = ("sign", "grad")


@register("universal", families=GRADIENT_FAMILIES, defaults={
    "step": None, "update": "sign", "epochs": None, "lr": None, "schedule": None,
    "batch_size": None})
def universal(ctx: DefenseContext, x: torch.Tensor, y: torch.Tensor, *, eps: float,
              step: float | None, update: str, **train: Any) -> DefenseResult:
    """Train against one shared perturbation v that ascends while the weights descend.

    Args:
        ctx: model family, seed, device, checkpoint folder (see ``DefenseContext``).
        x: (N, ...) training inputs in [0, 1]; y: (N,) int64 labels.
        eps: Linf radius xi of the universal perturbation.
        step: ascent step of v per mini-batch; default eps / 10.
        update: ``"sign"`` (FGSM-like step, the paper's choice) or ``"grad"`` (the batch
            gradient scaled to Linf norm ``step``).
        **train: ``epochs``, ``lr``, ``schedule``, ``batch_size`` overriding the model's
            own training settings.

    Returns:
        DefenseResult; ``info["v"]`` is the final training perturbation (shape of one
        input), ``history`` records its Linf norm per epoch.

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
    size = eps / 10 if step is None else float(step)
    if not size > 0:
        raise ValueError(f"step must be a number > 0, got {step!r}")
    if update not in UPDATES:
        raise ValueError(f"update must be one of {UPDATES}, got {update!r}")
    ctx = with_training(ctx, train)
    params = {"eps": eps, "step": size, "update": update,
              **{k: ctx.spec.params[k] for k in train}}
    state: dict[str, torch.Tensor] = {"v": torch.zeros(x.shape[1:], device=ctx.device)}

    def ascend() -> None:
        # Apply the pending ascent step from the last backward pass, if any.
        v = state["v"]
        if v.grad is None:
            return
        with torch.no_grad():
            g = v.grad
            d = g.sign() if update == "sign" else g / g.abs().amax().clamp_min(1e-12)
            v.add_(size * d).clamp_(-eps, eps)
        v.grad = None

    def perturb(m: torch.nn.Module, xb: torch.Tensor, yb: torch.Tensor, step_i: int
                ) -> torch.Tensor:
        ascend()
        v = state["v"]
        if not v.requires_grad:
            v.requires_grad_(True)
        return (xb + v).clamp(0, 1)

    def watch(epoch: int, m: torch.nn.Module, st: dict) -> tuple[bool, dict[str, Any]]:
        ascend()  # so that the checkpoint holds v after this epoch's last step
        v = st["v"].detach()
        return False, {"v_linf": float(v.abs().max()), "v_l2": float(v.norm())}

    module, history, state = fit_resumable(
        ctx, x, y, fingerprint=fingerprint(ctx, "universal", x, y, params),
        perturb=perturb, watch=watch, state=state, desc="universal")
    info = {"v": state["v"].detach().cpu().clone(), "n_fit": len(y)}
    return DefenseResult(module, "universal", params, sum(h["seconds"] for h in history),
                         tuple(history), info)
