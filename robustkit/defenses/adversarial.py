"""Per-sample adversarial training: FGSM with random start ("fast is better than free")
and PGD (Madry et al.), both on top of the shared training loop's ``perturb`` hook.

Both train a fresh model of ``ctx.spec`` (linear, mlp, cnn, resnet18) on adversarial
inputs only, as the papers do. The adversarial steps are built from ``robustkit.attacks``
(the ``pgd`` attack; RS-FGSM from its primitives, see ``rs_fgsm_step``) and run with the
model in eval mode (identical to train mode for the families without batch norm; for
resnet18 batch-norm statistics come from running stats).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from robustkit.attacks.base import eval_mode, generator, input_grad
from robustkit.attacks.base import project as project_onto
from robustkit.attacks.fgsm import ascent_direction
from robustkit.attacks.pgd import pgd as pgd_attack
from robustkit.defenses.adversarial_fit import adversarial_fit, state_number
from robustkit.defenses.base import (
    DefenseContext,
    DefenseResult,
    register,
    step_seed,
)
from robustkit.params import integer, number, positive

GRADIENT_FAMILIES = ("linear", "mlp", "cnn", "resnet18")
_TRAIN = {"epochs": None, "lr": None, "schedule": None, "batch_size": None}
_WATCH = {"watch_size": 256, "watch_steps": 10, "collapse_drop": 0.2, "eps_warmup": 0.0}
_WATCH_RULES = {"watch_size": integer(0), "watch_steps": integer(1),
                "collapse_drop": number(0, none=True), "eps_warmup": number(0, 1)}


@register("fgsm_rs", families=GRADIENT_FAMILIES, defaults={
    "alpha": None, "noise": 1.0, "project": True, "align": 0.0, "recover": 0,
    "recover_factor": 0.8, "recover_reset": False, "collapse_ratio": 0.5, **_WATCH,
    **_TRAIN, "schedule": "cyclic"}, rules={
    "alpha": positive(none=True), "noise": number(0), "align": number(0),
    "recover": integer(0), "recover_factor": number(0, 1, open_low=True),
    "collapse_ratio": number(0, 1, open_high=True, none=True), **_WATCH_RULES})
def fgsm_rs(ctx: DefenseContext, x: torch.Tensor, y: torch.Tensor, *, eps: float,
            alpha: float | None, noise: float, project: bool, align: float, recover: int,
            recover_factor: float, recover_reset: bool, collapse_ratio: float | None,
            watch_size: int, watch_steps: int, collapse_drop: float, eps_warmup: float,
            **train: Any) -> DefenseResult:
    """Train on RS-FGSM examples: uniform start in the eps box, one sign step of ``alpha``.

    Every epoch, PGD (``watch_steps`` steps) on a held-out batch of ``watch_size`` training
    samples checks for catastrophic overfitting: when its accuracy falls more than
    ``collapse_drop`` below the best epoch's, training stops and the best epoch's weights
    are restored (``info["stopped_on_collapse"]``). With ``recover=R`` the first R
    collapses do not stop training: the best epoch's weights are restored, the step
    ``alpha`` is multiplied by ``recover_factor`` and training goes on with the next epoch
    (``info["recoveries"]`` counts them; the final weights are the last epoch's).
    ``info["catastrophic_overfitting"]`` is True when any collapse was seen.

    Args:
        ctx: model family, seed, device, checkpoint folder (see ``DefenseContext``).
        x: (N, ...) training inputs in [0, 1]; y: (N,) int64 labels.
        eps: Linf budget.
        alpha: step size, default 1.25 * eps (Wong et al.).
        noise: radius of the uniform random start in units of eps (1: Wong et al.).
        recover: collapses answered by restore-and-continue with a smaller step (0: the
            first collapse stops training, as above).
        recover_factor: alpha's factor at each recovery, in (0, 1].
        recover_reset: at each recovery also clear the optimizer's state (Adam's moment
            estimates, built on the collapsed trajectory).
        project: project the step back onto the eps box (Wong et al.). ``noise=2,
            alpha=eps, project=False`` is N-FGSM (de Jorge et al., NeurIPS 2022,
            arXiv:2202.01181): the same cost, trained perturbations up to 3 eps, proposed
            against catastrophic overfitting.
        align: weight lambda of the GradAlign regularizer (Andriushchenko & Flammarion,
            NeurIPS 2020, arXiv:2007.02617), 0 for none: lambda * mean(1 - cos(grad at x,
            grad at x + eta)), eta uniform in the eps box, differentiated through the
            second gradient (a double backward: about 3x the cost of a plain FGSM step),
            proposed against catastrophic overfitting.
        watch_size: held-out samples for the overfitting watch (0: no watch; at most N/10).
        watch_steps: PGD steps of the watch.
        collapse_drop: accuracy drop (absolute) counted as a collapse.
        collapse_ratio: also count a fall below this fraction of the best accuracy (and by
            at least 0.05) as a collapse; default 0.5 (None or 0: only ``collapse_drop``).
            It catches a collapse that comes before the watch accuracy has risen above
            ``collapse_drop``, e.g. during the eps warm-up.
        eps_warmup: fraction of training over which eps (and alpha) ramp up linearly
            from 0 (0: full eps from the first step, as in the paper).
        **train: ``epochs``, ``lr``, ``schedule`` (default ``"cyclic"``), ``batch_size``
            overriding the model's own training settings.

    Returns:
        DefenseResult; ``history`` holds per-epoch loss, train and watch accuracies.

    Example:
        >>> from robustkit import load_dataset
        >>> from robustkit.defenses import defend
        >>> x, y, _ = load_dataset("digits")
        >>> res = defend("fgsm_rs", "mlp", x, y, eps=0.1, model_params={"epochs": 2})
        >>> sorted(res.info)[:2]
        ['best_epoch', 'catastrophic_overfitting']

    Reference: Wong, Rice & Kolter, "Fast is better than free: revisiting adversarial
    training", ICLR 2020 (arXiv:2001.03994). Does not guarantee robustness beyond eps or
    under other norms; a model can still overfit between two watch checks.
    """
    step_size = 1.25 * eps if alpha is None else float(alpha)
    if not step_size > 0:
        raise ValueError(f"alpha must be a number > 0, got {alpha!r}")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
        raise ValueError(f"noise must be a number >= 0, got {noise!r}")
    if not isinstance(project, bool):
        raise ValueError(f"project must be true or false, got {project!r}")  # noqa: TRY004
    if isinstance(recover, bool) or not isinstance(recover, int) or recover < 0:
        raise ValueError(f"recover must be an integer >= 0, got {recover!r}")
    if isinstance(recover_factor, bool) or not isinstance(recover_factor, (int, float)) \
            or not 0 < recover_factor <= 1:
        raise ValueError(f"recover_factor must be a number in (0, 1], got {recover_factor!r}")
    if collapse_ratio is not None and (isinstance(collapse_ratio, bool) or not isinstance(
            collapse_ratio, (int, float)) or not 0 <= collapse_ratio < 1):
        raise ValueError(f"collapse_ratio must be a number in [0, 1) or null (0 or null: "
                         f"off), got {collapse_ratio!r}")
    collapse_ratio = float(collapse_ratio) if collapse_ratio else None
    if not isinstance(recover_reset, bool):
        raise ValueError(  # noqa: TRY004
            f"recover_reset must be true or false, got {recover_reset!r}")
    if isinstance(align, bool) or not isinstance(align, (int, float)) or not align >= 0:
        raise ValueError(f"align must be a number >= 0, got {align!r}")
    state: dict[str, torch.Tensor] = {}

    def perturb(m: torch.nn.Module, xb: torch.Tensor, yb: torch.Tensor, step: int,
                e: float) -> torch.Tensor:
        scale = state_number(state, "alpha_scale", 1.0)
        return rs_fgsm_step(m, xb, yb, eps=e, alpha=scale * step_size * e / eps,
                            gen=generator(step_seed(ctx.seed, step), xb.device),
                            noise=noise, project=project)

    def penalty(m: torch.nn.Module, xb: torch.Tensor, yb: torch.Tensor, step: int,
                e: float) -> torch.Tensor:
        # its own stream: step_seed of a step index the perturbation never uses
        gen = generator(step_seed(ctx.seed, -1 - step), xb.device)
        return align * grad_misalignment(m, xb, yb, eps=e, gen=gen)

    # align, recover_reset and collapse_ratio are recorded only when used: runs without
    # them keep their earlier fingerprints (and cached models)
    params = {"eps": eps, "alpha": step_size, "noise": float(noise), "project": project,
              **({"align": float(align)} if align else {}),
              **({"recover_reset": True} if recover_reset else {}),
              **({"collapse_ratio": float(collapse_ratio)} if collapse_ratio else {}),
              "recover": recover,
              "recover_factor": float(recover_factor), "watch_size": watch_size,
              "watch_steps": watch_steps, "collapse_drop": collapse_drop,
              "eps_warmup": eps_warmup, **train}
    return adversarial_fit("fgsm_rs", ctx, x, y, params, perturb, eps=eps,
                        penalty=penalty if align else None, watch_size=watch_size,
                        watch_steps=watch_steps,
                        collapse_drop=collapse_drop, eps_warmup=eps_warmup, train=train,
                        state=state, recover=recover, recover_factor=float(recover_factor),
                        recover_reset=recover_reset, collapse_ratio=collapse_ratio)


@register("pgd", families=GRADIENT_FAMILIES, defaults={
    "steps": 10, "step_size": None, **_WATCH, "watch_size": 0, "collapse_drop": None,
    **_TRAIN}, rules={"steps": integer(1), "step_size": positive(none=True), **_WATCH_RULES})
def pgd(ctx: DefenseContext, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int,
        step_size: float | None, watch_size: int, watch_steps: int,
        collapse_drop: float | None, eps_warmup: float, **train: Any) -> DefenseResult:
    """Train on PGD examples: random start, ``steps`` projected sign steps in the eps box.

    Args:
        ctx: model family, seed, device, checkpoint folder (see ``DefenseContext``).
        x: (N, ...) training inputs in [0, 1]; y: (N,) int64 labels.
        eps: Linf budget.
        steps: PGD iterations per batch (Madry et al. use 40 on MNIST).
        step_size: per-step size, default 2.5 * eps / steps (Madry et al. use 0.01).
        watch_size: held-out samples for a per-epoch PGD accuracy record (0: none).
        watch_steps: PGD steps of that record.
        collapse_drop: stop and restore the best epoch after such a drop (None: never).
        eps_warmup: fraction of training over which eps (and the step size) ramp up
            linearly from 0; PGD training at MNIST's eps 0.3 from scratch can stay at
            chance without it.
        **train: ``epochs``, ``lr``, ``schedule``, ``batch_size`` overrides.

    Returns:
        DefenseResult.

    Example:
        >>> from robustkit import load_dataset
        >>> from robustkit.defenses import defend
        >>> x, y, _ = load_dataset("digits")
        >>> res = defend("pgd", "linear", x, y, eps=0.1, steps=3, epochs=2)
        >>> res.params["steps"]
        3

    Reference: Madry et al., "Towards Deep Learning Models Resistant to Adversarial
    Attacks", ICLR 2018 (arXiv:1706.06083). Robustness holds at most for the trained eps
    and norm, and only as far as PGD finds the inner maximum.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    size = 2.5 * eps / steps if step_size is None else float(step_size)

    def perturb(m: torch.nn.Module, xb: torch.Tensor, yb: torch.Tensor, step: int,
                e: float) -> torch.Tensor:
        return pgd_attack(m, xb, yb, eps=e, steps=steps, step_size=size * e / eps,
                          random_start=True, seed=step_seed(ctx.seed, step)).x_adv

    params = {"eps": eps, "steps": steps, "step_size": size, "watch_size": watch_size,
              "watch_steps": watch_steps, "collapse_drop": collapse_drop,
              "eps_warmup": eps_warmup, **train}
    return adversarial_fit("pgd", ctx, x, y, params, perturb, eps=eps, watch_size=watch_size,
                        watch_steps=watch_steps, collapse_drop=collapse_drop,
                        eps_warmup=eps_warmup, train=train)


def rs_fgsm_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                 alpha: float, gen: torch.Generator, noise: float = 1.0,
                 project: bool = True) -> torch.Tensor:
    """Wong et al.'s training step: delta0 ~ U(-eps, eps), one sign step of ``alpha`` at
    x + delta0, projection onto the eps box, then onto [0, 1]. ``noise`` scales the
    start's radius (delta0 ~ U(-noise eps, noise eps)); ``project=False`` skips the
    projection onto the eps box (N-FGSM), not the one onto [0, 1].

    Unlike the ``fgsm`` attack's random start, delta0 is *not* cut to the data range
    before the gradient step (as in Wong et al.'s code). On MNIST most pixels are 0; cut
    there, delta0 >= 0 and every step lands exactly on {0, eps}, i.e. the randomness the
    method relies on against catastrophic overfitting disappears on the background.
    """
    delta = (torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * 2 - 1) \
        * (eps * noise)
    with eval_mode(model):
        grad, _ = input_grad(model, x + delta, lambda z: F.cross_entropy(z, y, reduction="sum"))
    delta = delta + alpha * ascent_direction(grad, "linf")
    if project:
        delta = project_onto(delta, eps, "linf")
    return (x + delta).clamp(0, 1).detach()


def grad_misalignment(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                      eps: float, gen: torch.Generator) -> torch.Tensor:
    """GradAlign's term without its weight: mean over the batch of 1 - cos(g(x), g(x +
    eta)), g the input gradient of the cross-entropy and eta uniform in the Linf box of
    radius eps; differentiable in the model's parameters through g(x + eta) (double
    backward), g(x) taken as a constant, as in the paper's code. A sample with a zero
    gradient counts cos = 0."""
    g_clean, _ = input_grad(model, x, lambda z: F.cross_entropy(z, y, reduction="sum"))
    eta = (torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * 2 - 1) * eps
    xr = (x + eta).requires_grad_(True)
    (g_noisy,) = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr,
                                     create_graph=True)
    cos = F.cosine_similarity(g_clean.flatten(1), g_noisy.flatten(1), dim=1, eps=1e-12)
    return (1 - cos).mean()
