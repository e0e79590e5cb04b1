"""A classifier with a detector and/or a rectifier in front, scored as one system.

Decision rule (Akhtar et al.'s pipeline): the detector flags an input when its logit
exceeds its threshold; a flagged input is classified after rectification when there is a
rectifier, and rejected (label -1) when there is none. Without a detector, a rectifier
rectifies every input. Scoring: under attack a rejected input counts as defended
(correct); on clean inputs a rejection counts as an error.
"""
from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustkit import store
from robustkit.attacks.base import eval_mode
from robustkit.defenses.detector import Detector, build_detector
from robustkit.defenses.rectifier import Rectifier, build_rectifier

REJECT = -1


class DefendedSystem:
    """``model`` behind an optional ``detector`` and ``rectifier``.

    If the detector carries its own rectifier (the PRN variant, which detects on
    x - R(x)) and ``rectifier`` is not given, that rectifier is used for classification.

    Example:
        >>> system = DefendedSystem(model, detector=det)  # doctest: +SKIP
        >>> system.decide(x)  # labels, -1 where rejected  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, detector: Detector | None = None,
                 rectifier: Rectifier | None = None) -> None:
        if detector is not None and not isinstance(detector, Detector):
            raise TypeError(f"detector must be a Detector, got {type(detector).__name__}")
        if rectifier is None and detector is not None:
            rectifier = detector.rectifier
        self.model, self.detector, self.rectifier = model, detector, rectifier

    @property
    def threshold(self) -> float:
        return float(self.detector.threshold) if self.detector is not None else float("inf")

    def paths(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None,
                                              torch.Tensor | None]:
        """Differentiable ``(model(x), model(R(x)) or None, detector logit or None)``."""
        rect = self.model(self.rectifier(x)) if self.rectifier is not None else None
        det = self.detector(x) if self.detector is not None else None
        return self.model(x), rect, det

    @torch.no_grad()
    def score(self, x: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
        """Detector logits (N,) on CPU (higher = more likely perturbed)."""
        if self.detector is None:
            raise ValueError("this system has no detector to score with")
        with eval_mode(self.detector):
            return torch.cat([self.detector(x[i:i + batch_size]).cpu()
                              for i in range(0, len(x), batch_size)])

    @torch.no_grad()
    def decide(self, x: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
        """Labels (N,) int64 on CPU: the system's decision, -1 for a rejected input."""
        out = []
        with self._eval():
            for i in range(0, len(x), batch_size):
                out.append(decide_from(*self.paths(x[i:i + batch_size]),
                                       threshold=self.threshold).cpu())
        return torch.cat(out) if out else torch.empty(0, dtype=torch.long)

    def _eval(self) -> ExitStack:
        """A context keeping model, detector and rectifier in eval mode (restored after)."""
        stack = ExitStack()
        for m in (self.model, self.detector, self.rectifier):
            if m is not None:
                stack.enter_context(eval_mode(m))
        return stack


def decide_from(direct: torch.Tensor, rect: torch.Tensor | None, det: torch.Tensor | None,
                *, threshold: float) -> torch.Tensor:
    """The decision rule on precomputed outputs (see the module docstring)."""
    if det is None:
        return (rect if rect is not None else direct).argmax(1)
    flagged = det > threshold
    alt = rect.argmax(1) if rect is not None else torch.full_like(flagged, REJECT,
                                                                   dtype=torch.long)
    return torch.where(flagged, alt, direct.argmax(1))


def system_accuracy(decisions: torch.Tensor, y: torch.Tensor, *, adversarial: bool) -> float:
    """Accuracy of system decisions: a rejection (-1) is correct on adversarial inputs
    and an error on clean inputs.

    Example:
        >>> d, y = torch.tensor([0, -1, 2, -1]), torch.tensor([0, 1, 1, 1])
        >>> system_accuracy(d, y, adversarial=True), system_accuracy(d, y, adversarial=False)
        (0.75, 0.25)
    """
    if decisions.shape != y.shape:
        raise ValueError(f"decisions {tuple(decisions.shape)} and y {tuple(y.shape)} differ")
    ok = decisions.cpu() == y.cpu()
    if adversarial:
        ok |= decisions.cpu() == REJECT
    return float(ok.float().mean()) if len(ok) else float("nan")


def save_system(system: DefendedSystem, directory: str | os.PathLike, **meta: Any) -> Path:
    """Store the detector and the rectifier (not the model) as named store groups."""
    if system.detector is not None:
        store.save(system.detector, directory, family="detector", name="detector", **meta)
    if system.rectifier is not None and (system.detector is None
                                         or system.rectifier is not system.detector.rectifier):
        store.save(system.rectifier, directory, family="rectifier", name="rectifier", **meta)
    return Path(directory)


def load_system(directory: str | os.PathLike, model: nn.Module, *,
                device: str | torch.device = "cpu") -> DefendedSystem:
    """Rebuild the detector/rectifier groups :func:`save_system` wrote, around ``model``."""
    d = Path(directory)
    det = store.load(d, name="detector", build=build_detector, device=device)[0] \
        if (d / "detector.json").is_file() else None
    rect = store.load(d, name="rectifier", build=build_rectifier, device=device)[0] \
        if (d / "rectifier.json").is_file() else None
    return DefendedSystem(model, det, rect)  # type: ignore[arg-type]
