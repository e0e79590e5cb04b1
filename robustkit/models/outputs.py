"""What an imported network must give: finite weights and (N, n_classes) finite logits.

Networks brought from elsewhere (ONNX graphs, the user's torch code) are checked here before
they are stored: a state holding NaN or inf, an output that is not one row of scores per
input, outputs that are NaN on the data, and outputs that are probabilities (every row
non-negative, summing to 1), which the attacks' margin, DLR and cross-entropy losses would
take for logits and which make them weaker. Probabilities are refused unless the import
says ``outputs="probabilities"``; then :func:`to_logits` turns them into log-probabilities
(logits of the same softmax), and the stored model applies it on every call.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

OUTPUTS = ("logits", "probabilities")
# Rows summing to 1 within this much (float32 softmax rounding) are taken for probabilities.
SUM_TOLERANCE = 1e-4
# log(0) of a saturated softmax is -inf; the floor keeps the logits finite (float64 and
# float32 alike: 1e-30 is a normal float32).
PROB_FLOOR = 1e-30


def check_outputs_option(outputs: str) -> str:
    """``outputs`` if it is one of :data:`OUTPUTS`, else ValueError."""
    if outputs not in OUTPUTS:
        raise ValueError(f"outputs={outputs!r} must be one of {', '.join(OUTPUTS)}")
    return outputs


def to_logits(out: torch.Tensor, outputs: str) -> torch.Tensor:
    """``out`` unchanged for ``"logits"``; the log of probabilities for ``"probabilities"``."""
    if outputs == "probabilities":
        return out.clamp_min(PROB_FLOOR).log()
    return out


def check_finite_state(state: Mapping[str, torch.Tensor], where: object) -> None:
    """ValueError naming the first floating tensor of ``state`` holding NaN or inf."""
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            n = int((~torch.isfinite(value)).sum())
            raise ValueError(f"{where}: tensor {key!r} holds {n} non-finite values (NaN or "
                             f"inf) of {value.numel()}; not stored")


def shape_text(shape: torch.Size | tuple[int, ...], n: int) -> str:
    """``(N, 10)`` for a batch of ``n`` with 10 columns; ``()`` for a scalar."""
    dims = ["N" if i == 0 and d == n else str(d) for i, d in enumerate(shape)]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def check_output_shape(out: object, n: int, source: object) -> int:
    """The number of classes of ``out``, the output for a batch of ``n`` inputs.

    Raises:
        TypeError: ``out`` is not a tensor.
        ValueError: ``out`` is not of shape (n, n_classes), n_classes >= 2.
    """
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{source}: the network returned a {type(out).__name__}; it must "
                         f"return one tensor of shape (N, n_classes)")
    if out.ndim != 2 or out.shape[0] != n or out.shape[1] < 2:
        raise ValueError(f"{source}: the network's output must be (N, n_classes) logits "
                         f"with n_classes >= 2; for N={n} inputs it is "
                         f"{shape_text(out.shape, n)}")
    return int(out.shape[1])


def check_scores(out: torch.Tensor, outputs: str | None, source: object,
                 dataset: str) -> None:
    """Refuse non-finite outputs, and outputs whose kind is not ``outputs``.

    Args:
        out: (N, K) raw outputs of the network on the dataset's inputs.
        outputs: what the import says they are, ``"logits"`` or ``"probabilities"``;
            None checks finiteness only (converted scikit-learn models give scores).
    """
    if not bool(torch.isfinite(out).all()):
        bad = int((~torch.isfinite(out).all(1)).sum())
        raise ValueError(f"{source}: the outputs are non-finite (NaN or inf) on {bad} of "
                         f"{len(out)} {dataset} test inputs; not stored")
    probs = bool((out >= 0).all()) and bool(
        ((out.double().sum(1) - 1).abs() <= SUM_TOLERANCE).all())
    if outputs == "logits" and probs:
        raise ValueError(f"{source}: the outputs are probabilities (non-negative, each row "
                         f"sums to 1 on the {dataset} test inputs), not logits; attacks on "
                         f"probabilities are weaker: export the network without its final "
                         f"softmax, or import with --outputs probabilities (library: "
                         f"outputs='probabilities') to store their log")
    if outputs == "probabilities" and not probs:
        raise ValueError(f"{source}: outputs='probabilities' was given, but the outputs are "
                         f"not probabilities (rows with negative values or not summing to "
                         f"1 on the {dataset} test inputs); import them as logits")
