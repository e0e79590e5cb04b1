"""Universal perturbations fitted on a stream of ``(x, y)`` batches instead of one tensor.

Both fitting algorithms are passes over data, so they run on any re-iterable of batches
(a ``torch.utils.data.DataLoader``, a list): memory is bounded by one batch (plus, for
batched ``uap_stream``, the probe set of its acceptance test). The visiting order is the
stream's (shuffle in the DataLoader for a random order); clean predictions are recomputed
per batch rather than stored, and the rates of each pass take one more pass.
Given the batches ``uap``/``uap_sgd`` would visit, in the same order, they return the
same v: that is how they are tested.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from robustkit.attacks.base import check_inputs, eval_mode, project
from robustkit.attacks.universal import _fold
from robustkit.attacks.universal_common import (
    UAPResult,
    check_count,
    check_plateau,
    check_radius,
    plateaued,
    predict,
)
from robustkit.attacks.universal_sgd import _direction, _grad

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def uap_sgd_stream(model: nn.Module, batches: Batches, *, xi: float, norm: str = "linf",
                   epochs: int = 10, batch_size: int | None = None, lr: float | None = None,
                   target: int | None = None, beta: float = 12.0, sign: bool = True,
                   delta: float = 0.2, seed: int = 0,
                   device: torch.device | str | None = None) -> UAPResult:
    """:func:`robustkit.attacks.uap_sgd` over a stream: one step per streamed batch (or per
    ``batch_size`` chunk of it), ``epochs`` passes, the v of the best epoch.

    Args:
        model: classifier returning logits (N, K); left untouched.
        batches: re-iterable of (x (B, ...) in [0, 1], y (B,) int64).
        device: where to compute (default: the model's device).
        seed: unused (the stream sets the order); accepted for the registry's signature.
        Others: as :func:`robustkit.attacks.uap_sgd`.

    Returns:
        ``UAPResult`` (``fooling_rate_val`` is None).

    Example:
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> from robustkit import load_dataset, models
        >>> tr = load_dataset("digits", "train")
        >>> model, _ = models.train("mlp", "digits", hidden=(64,), epochs=10)
        >>> loader = DataLoader(TensorDataset(tr.x, tr.y), batch_size=128, shuffle=True)
        >>> uap_sgd_stream(model, loader, xi=0.3).fooling_rate > 0.5
        True

    Reference: Shafahi, Najibi, Xu, Dickerson, Davis & Goldstein, "Universal adversarial
    training", AAAI 2020 (arXiv:1811.11304).
    """
    dev = _setup(model, batches, xi=xi, norm=norm, delta=delta, device=device)
    check_count("epochs", epochs, 0)
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float))
                           or not lr > 0):
        raise ValueError(f"lr must be None or a number > 0, got {lr!r}")
    step = xi / 10 if lr is None else lr
    t0 = time.perf_counter()
    history: list[dict[str, Any]] = []
    with eval_mode(model):
        first = _first(batches, dev)[0]
        v = torch.zeros_like(first[0])
        with torch.no_grad():
            k = int(model(first[:1]).shape[1])
        if target is not None and (isinstance(target, bool) or not isinstance(target, int)
                                   or not 0 <= target < k):
            raise ValueError(f"target must be None or a class in [0, {k}), got {target!r}")
        best, best_score = v, 0.0
        for epoch in range(epochs if xi > 0 else 0):
            for xb, _ in _chunks(batches, dev, batch_size):
                g = _grad(model, xb, predict(model, xb), v, target=target, beta=beta)
                v = project((v + step * _direction(g, sign))[None], xi, norm)[0]
            rate, _, hit = _rates(model, batches, v, dev, target)
            extra = {"target_rate": hit} if hit is not None else {}
            history.append(_record(epoch + 1, rate, v, t0, **extra))
            score = hit if hit is not None else rate
            if score >= best_score:
                best, best_score = v, score
        return _summary(model, batches, best, dev, history, delta, t0, target)


def uap_stream(model: nn.Module, batches: Batches, *, xi: float, norm: str = "linf",
               delta: float = 0.2, max_passes: int = 10, batch_size: int = 32,
               overshoot: float = 0.02, deepfool_iter: int = 10, candidates: int = 10,
               probe_size: int = 2048, seed: int = 0,
               device: torch.device | str | None = None, patience: int | None = 3,
               min_gain: float = 0.005) -> UAPResult:
    """:func:`robustkit.attacks.uap` (Algorithm 1, DeepFool steps) over a stream.

    Each pass folds the DeepFool updates of every ``batch_size`` chunk of the stream into
    v; with ``batch_size > 1`` an update is kept only if the fooling rate on the probe set
    does not drop. The probe set is the stream's first ``probe_size`` samples, kept in
    memory: choose ``probe_size`` with the input size in mind. The plateau stop
    (``patience``, ``min_gain``) is ``uap``'s, on the fooling rate of the whole stream.

    Args:
        batches: re-iterable of (x (B, ...) in [0, 1], y (B,) int64).
        device: where to compute (default: the model's device).
        seed: unused (the stream sets the order); accepted for the registry's signature.
        Others: as :func:`robustkit.attacks.uap`.

    Returns:
        ``UAPResult`` (``fooling_rate_val`` is None).

    Reference: Moosavi-Dezfooli, Fawzi, Fawzi & Frossard, "Universal adversarial
    perturbations", CVPR 2017 (arXiv:1610.08401).
    """
    dev = _setup(model, batches, xi=xi, norm=norm, delta=delta, device=device)
    for name, value, low in (("max_passes", max_passes, 0), ("batch_size", batch_size, 1),
                             ("deepfool_iter", deepfool_iter, 1), ("probe_size", probe_size, 1)):
        check_count(name, value, low)
    check_plateau(patience, min_gain)
    t0 = time.perf_counter()
    history: list[dict[str, Any]] = []
    with eval_mode(model):
        px = _probe(batches, dev, probe_size) if batch_size > 1 else None
        pc = predict(model, px) if px is not None else None
        v = torch.zeros_like(_first(batches, dev)[0][0])
        rate, probe_rate = _rates(model, batches, v, dev, None)[0], 0.0
        rates, stalled = [rate], False
        while len(history) < max_passes and rate < 1 - delta and xi > 0 and not stalled:
            tried = kept = 0
            for xb, _ in _chunks(batches, dev, batch_size):
                new = _fold(model, xb, predict(model, xb), v, xi=xi, norm=norm,
                            overshoot=overshoot, max_iter=deepfool_iter, candidates=candidates)
                if new is None:
                    continue
                tried += 1
                if px is None or pc is None:
                    v, kept = new, kept + 1
                    continue
                new_rate = float((predict(model, (px + new).clamp(0, 1)) != pc).float().mean())
                if new_rate >= probe_rate:
                    v, probe_rate, kept = new, new_rate, kept + 1
            rate = _rates(model, batches, v, dev, None)[0]
            rates.append(rate)
            stalled = plateaued(rates, patience, min_gain)
            history.append(_record(len(history) + 1, rate, v, t0,
                                   accepted=kept / tried if tried else 1.0))
        return _summary(model, batches, v, dev, history, delta, t0, None, plateau=stalled)


def _setup(model: nn.Module, batches: Batches, *, xi: float, norm: str, delta: float,
           device: torch.device | str | None) -> torch.device:
    """Validate the shared arguments; return the device to compute on."""
    if isinstance(batches, Iterator):
        raise TypeError("batches must be re-iterable (a DataLoader, a list), not a one-shot "
                        "iterator: fitting makes several passes over it")
    check_radius(xi=xi, norm=norm, delta=delta)
    if device is not None:
        return torch.device(device)
    return next(iter(model.parameters()), torch.empty(0)).device


class _DataOnly(nn.Module):
    """Stands in for the model where only the batch itself is checked (dtype, shape, the
    [0, 1] range): its arch declares a class count no label reaches, so the check makes no
    forward pass (the model's own outputs are checked where it runs)."""

    arch: ClassVar[dict[str, int]] = {"n_classes": 2**62}


_DATA_ONLY = _DataOnly()


def _chunks(batches: Batches, dev: torch.device, size: int | None
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The stream's batches on ``dev``, validated, split into chunks of at most ``size``."""
    for xb, yb in batches:
        check_inputs(_DATA_ONLY, xb, yb)
        xb, yb = xb.to(dev), yb.to(dev)
        step = size or len(xb)
        for s in range(0, len(xb), step):
            yield xb[s:s + step], yb[s:s + step]


def _first(batches: Batches, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    for xb, yb in _chunks(batches, dev, None):
        if len(xb):
            return xb, yb
    raise ValueError("batches is empty: a universal perturbation needs data to fit on")


def _probe(batches: Batches, dev: torch.device, n: int) -> torch.Tensor:
    parts, got = [], 0
    for xb, _ in _chunks(batches, dev, None):
        parts.append(xb[:n - got])
        got += len(parts[-1])
        if got >= n:
            break
    return torch.cat(parts)


def _rates(model: nn.Module, batches: Batches, v: torch.Tensor, dev: torch.device,
           target: int | None) -> tuple[float, float, float | None]:
    """One pass: fooling rate, misclassification rate, rate of predicting ``target``."""
    n = fooled = wrong = hit = 0
    for xb, yb in _chunks(batches, dev, None):
        pred = predict(model, (xb + v).clamp(0, 1))
        fooled += int((pred != predict(model, xb)).sum())
        wrong += int((pred != yb).sum())
        hit += int((pred == target).sum()) if target is not None else 0
        n += len(xb)
    rate = (lambda k: k / n if n else 0.0)
    return rate(fooled), rate(wrong), rate(hit) if target is not None else None


def _record(n: int, rate: float, v: torch.Tensor, t0: float, **extra: Any) -> dict[str, Any]:
    return {"pass": n, "fooling_rate": rate, "seconds": time.perf_counter() - t0,
            "l2": float(v.norm()), "linf": float(v.abs().max()), **extra}


def _summary(model: nn.Module, batches: Batches, v: torch.Tensor, dev: torch.device,
             history: list[dict[str, Any]], delta: float, t0: float,
             target: int | None, *, plateau: bool = False) -> UAPResult:
    fool, misc, hit = _rates(model, batches, v, dev, target)
    reached = (hit if hit is not None else fool) >= 1 - delta
    return UAPResult(v.detach(), fool, misc, None, history, reached, len(history),
                     time.perf_counter() - t0, hit, plateau and not reached)


# The stream fitters of the registry's universal attacks: name -> (fit, norm).
STREAM_FITS: dict[str, tuple[Callable[..., UAPResult], str]] = {"uap": (uap_stream, "linf"), "uap_l2": (uap_stream, "l2"),
               "uap_sgd": (uap_sgd_stream, "linf"), "uap_sgd_l2": (uap_sgd_stream, "l2")}
