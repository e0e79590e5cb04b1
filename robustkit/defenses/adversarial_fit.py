"""The training run shared by the per-sample adversarial training defenses (``fgsm_rs``,
``pgd``): eps warm-up, a held-out batch watched by PGD for catastrophic overfitting, and
the best epoch's weights restored after a collapse (Wong et al. 2020, section 5).
"""
from __future__ import annotations

import math
from typing import Any

import torch

from robustkit.attacks.pgd import pgd as pgd_attack
from robustkit.defenses.base import DefenseContext, DefenseResult, with_training
from robustkit.defenses.checkpoint import fingerprint, fit_resumable


def adversarial_fit(name: str, ctx: DefenseContext, x: torch.Tensor, y: torch.Tensor,
                 params: dict[str, Any], perturb: Any, *, eps: float, watch_size: int,
                 watch_steps: int, collapse_drop: float | None, eps_warmup: float,
                 train: dict[str, Any], state: dict[str, torch.Tensor] | None = None,
                 recover: int = 0, recover_factor: float = 1.0,
                 recover_reset: bool = False, collapse_ratio: float | None = None,
                 penalty: Any = None) -> DefenseResult:
    """Train a fresh model on ``perturb``'s adversarial inputs (eps ramped up over the
    first ``eps_warmup`` share of the steps), watching a held-out batch of ``watch_size``
    samples for catastrophic overfitting (:func:`collapse_watch`); the best epoch's
    weights come back after a collapse. ``params`` gets the training parameters."""
    if isinstance(eps_warmup, bool) or not isinstance(eps_warmup, (int, float)) \
            or not 0 <= eps_warmup <= 1:
        raise ValueError(f"eps_warmup must be a number in [0, 1], got {eps_warmup!r}")
    ctx = with_training(ctx, train)
    params.update({k: ctx.spec.params[k] for k in train})
    x_fit, y_fit, x_w, y_w = _hold_out(x, y, watch_size, ctx.seed)
    total = int(ctx.spec.params["epochs"]) * math.ceil(len(x_fit) / int(
        ctx.spec.params["batch_size"]))

    def eps_at(step: int) -> float:
        # eps grows linearly over the first eps_warmup of all steps (0: full eps at once).
        return eps * (1.0 if eps_warmup == 0 else min(1.0, (step + 1) / (eps_warmup * total)))

    def ramped(m: torch.nn.Module, xb: torch.Tensor, yb: torch.Tensor, step: int
               ) -> torch.Tensor:
        return perturb(m, xb, yb, step, eps_at(step))

    def ramped_penalty(m: torch.nn.Module, xb: torch.Tensor, yb: torch.Tensor, step: int
                       ) -> torch.Tensor:
        return penalty(m, xb, yb, step, eps_at(step))

    watch = None
    if x_w is not None:
        watch = collapse_watch(x_w.to(ctx.device), y_w.to(ctx.device), eps=eps,
                                steps=watch_steps, drop=collapse_drop, seed=ctx.seed,
                                recover=recover, factor=recover_factor,
                                reset=recover_reset, ratio=collapse_ratio)
    module, history, state = fit_resumable(
        ctx, x_fit, y_fit, fingerprint=fingerprint(ctx, name, x, y, params),
        perturb=ramped, penalty=None if penalty is None else ramped_penalty, watch=watch,
        desc=name, state=state)
    collapsed = bool(history and history[-1].get("collapsed", False))
    if collapsed:
        _restore_best(module, state)
    recoveries = int(state_number(state, "recoveries", 0))
    info = {"catastrophic_overfitting": collapsed or recoveries > 0,  # seen at all
            "stopped_on_collapse": collapsed,
            "best_epoch": int(state["best_epoch"]) if "best_epoch" in state else None,
            "stopped_epoch": history[-1]["epoch"] if history else None,
            "recoveries": recoveries, "n_fit": len(y_fit)}
    return DefenseResult(module, name, params, sum(h["seconds"] for h in history),
                         tuple(history), info)


def _hold_out(x: torch.Tensor, y: torch.Tensor, size: int, seed: int):
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"watch_size must be an integer >= 0, got {size!r}")
    size = min(size, len(x) // 10)
    if size == 0:
        return x, y, None, None
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    keep, held = order[size:].sort().values, order[:size]
    return x[keep], y[keep], x[held], y[held]


def collapse_watch(x_w: torch.Tensor, y_w: torch.Tensor, *, eps: float, steps: int,
                    drop: float | None, seed: int, recover: int = 0, factor: float = 1.0,
                    reset: bool = False, ratio: float | None = None):
    """Per-epoch PGD accuracy on the held-out batch; keeps the best epoch's weights in the
    state. A drop of more than ``drop`` below the best (or, with ``ratio``, below ``ratio``
    times the best and by at least 0.05) is a collapse: stop (the caller
    restores the best weights), or, for the first ``recover`` collapses, restore them now,
    scale the state's ``alpha_scale`` by ``factor`` and go on (with ``reset``, the record
    asks the training loop to clear the optimizer's state too)."""

    def watch(epoch: int, m: torch.nn.Module, state: dict) -> tuple[bool, dict[str, Any]]:
        r = pgd_attack(m, x_w, y_w, eps=eps, steps=steps, seed=seed)
        acc = float((r.pred == y_w).float().mean()) if r.pred is not None else math.nan
        best = float(state["best_acc"]) if "best_acc" in state else -math.inf
        if acc > best:
            state["best_acc"] = torch.tensor(acc)
            state["best_epoch"] = torch.tensor(epoch)
            for k, v in m.state_dict().items():
                state[f"best.{k}"] = v.detach().clone()
        top = max(best, acc)
        collapsed = (drop is not None and acc < top - drop) or (
            ratio is not None and acc < ratio * top and acc < top - 0.05)
        done = int(state_number(state, "recoveries", 0))
        if collapsed and done < recover:
            _restore_best(m, state)
            state["recoveries"] = torch.tensor(done + 1)
            scale = state_number(state, "alpha_scale", 1.0)
            state["alpha_scale"] = torch.tensor(scale * factor)
            return False, {"watch_pgd_accuracy": acc, "collapsed": False,
                           "recovered": True, "alpha_scale": scale * factor,
                           **({"reset_optimizer": True} if reset else {})}
        return collapsed, {"watch_pgd_accuracy": acc, "collapsed": collapsed}

    return watch


def state_number(state: dict[str, torch.Tensor], key: str, default: float) -> float:
    """A scalar the defense keeps in its (checkpointed) state, or ``default``."""
    return float(state[key]) if key in state else default


def _restore_best(m: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load the best epoch's weights, kept by the watch as ``best.<name>``, into m."""
    with torch.no_grad():
        for k, v in m.state_dict().items():
            v.copy_(state[f"best.{k}"])
