"""The model registry: one ``Family`` per classifier kind, all producing torch modules.

Families register themselves where they are defined (``register(Family(...))`` in
``models/linear.py``...); the package's entry point, :mod:`robustkit.models`, imports
every family module, so importing any part of ``robustkit.models`` fills the registry.

Every fitted model is an ``nn.Module`` mapping x in [0, 1] to logits (N, n_classes),
differentiable with respect to x, whatever the family (SVM and GMM included). Each
module keeps the constructor arguments it was built with in ``module.arch`` (a
JSON-serializable dict) so that the store can rebuild it without pickle.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from robustkit.params import Rule, choice, integer, problems, rules_from
from robustkit.registry import Registry

# fit(x, y, n_classes, params, seed, device, progress) -> fitted module
FitFn = Callable[..., nn.Module]


@dataclass(frozen=True)
class Family:
    """A classifier family: its parameters with defaults, how to fit it, its module class."""

    name: str
    defaults: Mapping[str, Any]
    fit: FitFn
    module: type[nn.Module]
    doc: str = ""
    choices: Mapping[str, tuple] = field(default_factory=dict)
    # Value rules (robustkit.params) beyond ``choices``; other parameters get the rule their
    # default's type implies.
    rules: Mapping[str, Rule] = field(default_factory=dict)


FAMILIES: Registry[Family] = Registry("model")

# Kinds of modules brought from elsewhere (scikit-learn, ONNX, the user's own torch code):
# never trained here, only rebuilt by the store: ``build(arch, directory) -> module``.
ImportedBuilder = Callable[[Mapping[str, Any], Any], nn.Module]
IMPORTED: Registry[ImportedBuilder] = Registry("imported model kind")


def register(family: Family) -> Family:
    """Add a family to the registry (duplicates raise)."""
    return FAMILIES.add(family.name, family)


def names() -> list[str]:
    """Registered family names."""
    return FAMILIES.names()


def get(name: str) -> Family:
    return FAMILIES.get(name)


@dataclass(frozen=True)
class ModelSpec:
    """A validated (family, params) pair, ready to fit.

    Example:
        >>> spec = create("mlp", hidden=(32,), epochs=2)
        >>> spec.params["activation"]
        'relu'
    """

    family: str
    params: Mapping[str, Any]

    def fit(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        n_classes: int | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
        progress: bool = False,
    ) -> nn.Module:
        """Fit on x (N, ...) in [0, 1] and y (N,) int64; returns the module in eval mode on CPU."""
        _check_xy(x, y)
        check_seed(seed)
        k = int(n_classes if n_classes is not None else int(y.max()) + 1)
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= k:
            raise ValueError(f"y must hold class indices in [0, {k}) (n_classes={k}), got "
                             f"values in [{lo}, {hi}]")
        fam = get(self.family)
        module = fam.fit(
            x, y, n_classes=k, params=dict(self.params), seed=seed,
            device=resolve_device(device), progress=progress,
        )
        return module.cpu().eval()


def create(name: str, **params: Any) -> ModelSpec:
    """Validate ``params`` for family ``name`` and fill in defaults.

    Raises:
        ValueError: unknown family, unknown parameters or values outside what each
            parameter allows; the message lists every problem and what is valid.
    """
    found = check_params(name, params)
    if found:
        raise ValueError("; ".join(found))
    return ModelSpec(name, {**get(name).defaults, **params})


def check_params(name: str, params: Mapping[str, Any]) -> list[str]:
    """Every problem of ``params`` for family ``name`` (unknown keys, bad values), without
    building anything; empty when they are valid.

    Example:
        >>> check_params("mlp", {"epochs": -1})
        ["model 'mlp': epochs=-1 is not valid: expected an integer >= 1"]
    """
    fam = get(name)
    unknown = sorted(set(params) - set(fam.defaults))
    out = []
    if unknown:
        out.append(f"unknown parameter(s) {unknown} for model {name!r}; "
                   f"valid: {', '.join(sorted(fam.defaults))}")
    rules = rules_from(fam.defaults, {**{k: choice(*v) for k, v in fam.choices.items()},
                                      **fam.rules})
    known = {k: v for k, v in params.items() if k in fam.defaults}
    return out + problems(known, rules, prefix=f"model {name!r}: ")


def build(name: str, arch: Mapping[str, Any], directory: Any = None) -> nn.Module:
    """Rebuild an unfitted module of family ``name`` from its ``arch`` dict (for the store).

    ``name`` may also be an imported kind (``sklearn``, ``onnx``, ``torch``); those builders
    get the model's folder ``directory`` (an ONNX graph is kept there).
    """
    if name in IMPORTED:
        return IMPORTED.get(name)(arch, directory)
    fam = get(name)
    return fam.module(**arch)


def imported_kinds() -> list[str]:
    """Names of the imported model kinds the store can rebuild."""
    return IMPORTED.names()


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; anything else as torch understands it."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={device!r} is not a device; use 'auto', 'cpu', 'cuda' or "
                         f"'cuda:N'") from None
    if dev.type == "meta":
        raise ValueError("device='meta' holds shapes, no data: models and attacks need "
                         "'auto', 'cpu' or 'cuda'")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} asked for CUDA but none is available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device={str(device)!r}: there are {torch.cuda.device_count()} CUDA "
                         f"devices (cuda:0..cuda:{torch.cuda.device_count() - 1})")
    return dev


def model_device(model: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for an empty module)."""
    for t in model.parameters():
        return t.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
    """Predicted labels (N,) of ``x`` on the model's device, in batches, in eval mode."""
    dev = model_device(model)
    was = model.training
    model.eval()
    try:
        out = [model(x[i:i + batch_size].to(dev)).argmax(1).cpu()
               for i in range(0, len(x), batch_size)]
    finally:
        model.train(was)
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kw: Any) -> float:
    """Fraction of ``x`` whose predicted label equals ``y``."""
    return float((predict(model, x, **kw) == y.cpu()).double().mean())


def _check_xy(x: torch.Tensor, y: torch.Tensor) -> None:
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise TypeError("x must be a floating-point tensor")
    if not torch.is_tensor(y) or y.dtype != torch.int64:
        raise TypeError("y must be an int64 tensor")
    if len(x) != len(y):
        raise ValueError(f"len(x)={len(x)} != len(y)={len(y)}")
    if len(x) == 0:
        raise ValueError("x is empty")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or inf")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise ValueError(f"x must lie in [0, 1] (the data contract: attacks and eps assume it), "
                         f"got range [{lo:.4g}, {hi:.4g}]")


SEEDS = integer(0, 2**32 - 1)  # what numpy and scikit-learn take as random_state


def check_seed(seed: Any) -> None:
    """ValueError unless ``seed`` is an integer numpy and scikit-learn take (0 to 2**32-1)."""
    why = SEEDS(seed)
    if why is not None:
        raise ValueError(f"seed must be {why}, got {seed!r}")
