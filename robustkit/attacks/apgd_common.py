"""APGD's parts that do not run the model: the step-size checkpoints, the losses it ascends
(CE, DLR, targeted DLR, margin) and the checks of its hyperparameters."""
from __future__ import annotations

import math

import torch

from robustkit.attacks.base import NORMS
from robustkit.attacks.pgd import margin_loss

LOSSES = ("ce", "dlr", "margin")


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


def resolve_loss(loss: str, n_classes: int, targeted: bool) -> tuple[str, dict]:
    """The loss actually used and the info it adds: DLR needs >= 3 classes (targeted >= 4);
    below that the margin loss replaces it."""
    if loss == "dlr" and n_classes < (4 if targeted else 3):
        return "margin", {"loss_fallback": "margin"}
    return loss, {}


def check_params(norm: str, loss: str, steps: int, restarts: int, rho: float, eot: int) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    for name, value in (("steps", steps), ("restarts", restarts), ("eot", eot)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not isinstance(rho, (int, float)) or not 0 < rho <= 1:
        raise ValueError(f"rho must be a number in (0, 1], got {rho!r}")
