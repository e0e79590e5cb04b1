""":func:`robustkit.evaluate.evaluate` over a stream of ``(x, y)`` batches.

Memory is bounded by the batch size, not the dataset: each batch is attacked at every eps
and dropped; what is kept per sample is what the rows are computed from (label, clean and
adversarial prediction, L2 and Linf norm of the applied delta: about 8 + 16 bytes per
sample and eps; 50,000 samples at 5 eps is 5 MB). Keeping those small vectors, rather
than running sums, makes the medians exact and the rows the very same numbers as
``evaluate`` on the concatenated data: the per-batch work is evaluate's own, and sample i
of the stream draws its randomness from (seed, i) there and here, so with ``batch_size``
equal to the stream's batch size the rows agree to the last digit (``seconds`` aside).
"""
from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from robustkit.attacks import AttackResult, AttackSpec
from robustkit.attacks.base import eval_mode
from robustkit.evaluate.checks import (
    canonical,
    check_data,
    check_eps,
    clock,
    resolve_attack,
    with_version,
)
from robustkit.evaluate.runs import Context, OnResult, Outcome, predict, run_block
from robustkit.evaluate.samples import row
from robustkit.models.registry import model_device, resolve_device

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def evaluate_stream(model: nn.Module, attack: str | AttackSpec, batches: Batches, *,
                    eps: float | Sequence[float], device: str | torch.device | None = None,
                    fit: Batches | tuple[torch.Tensor, torch.Tensor] | None = None,
                    seed: int = 0, on_result: OnResult | None = None,
                    **params: Any) -> list[dict[str, Any]]:
    """Attack ``model`` on a stream of batches at every eps; the rows of ``evaluate``.

    Args:
        model: classifier returning logits (N, K); left unchanged.
        attack: a registry name or an AttackSpec.
        batches: any iterable of (x (B, ...) in [0, 1], y (B,) int64): a
            ``torch.utils.data.DataLoader``, :func:`robustkit.data.iter_batches`,
            a list. Read once (re-iterable only when a universal attack fits on it).
        eps: one budget or a list (each >= 0); the radius xi for universal attacks.
        device: where to compute: None (the model's device), ``"auto"``, ``"cpu"``, ...
        fit: what a universal perturbation is fitted on: a re-iterable of batches (fitted
            with :mod:`robustkit.attacks.universal_stream`), a ``(fit_x, fit_y)`` pair of
            tensors (fitted as ``evaluate`` does), or None (``batches`` themselves).
        seed: base seed; sample i of the stream draws from (seed, i).
        on_result: called with (eps, AttackResult) for every attack call; for a universal
            attack fitted on a stream, once per eps with ``info["v"]`` and ``info["uap"]``.
        **params: attack hyperparameters.

    Returns:
        One dict per eps with the keys of ``robustkit.evaluate.COLUMNS``.

    Example:
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> from robustkit import load_dataset, models
        >>> model, _ = models.train("linear", "digits", epochs=5)
        >>> x, y, _ = load_dataset("digits", "test")
        >>> rows = evaluate_stream(model, "fgsm", DataLoader(TensorDataset(x, y), 64),
        ...                        eps=[0.0, 0.1])
        >>> rows[0]["n"], rows[0]["robust_accuracy"] == rows[0]["clean_accuracy"]
        (450, True)
    """
    spec = resolve_attack(attack)
    eps_list = check_eps(eps)
    dev = canonical(resolve_device(device) if device is not None else model_device(model))
    if canonical(model_device(model)) != dev:
        model = copy.deepcopy(model).to(dev)
    ys: list[torch.Tensor] = []
    cleans: list[torch.Tensor] = []
    parts: list[list[Outcome]] = []
    with eval_mode(model):
        fitted = _fit(spec, model, batches, fit, eps_list, dev, seed, on_result, params) \
            if spec.kind == "universal" else []
        vs, fit_seconds = [v for v, _ in fitted], [t for _, t in fitted]
        k, offset = None, 0
        for xb, yb in batches:
            k = check_data(model, xb, yb, "x", "y", dev, k)
            clean = predict(model, xb.to(dev)).cpu()
            ctx = Context(dev, len(xb), seed, offset, on_result, params, clean, tuple(vs))
            parts.append(run_block(spec, model, xb, yb, eps_list, ctx))
            ys.append(yb.cpu())
            cleans.append(clean)
            offset += len(xb)
    if offset == 0:
        raise ValueError("batches is empty: nothing to evaluate")
    y, clean = torch.cat(ys), torch.cat(cleans)
    rows = []
    for i, e in enumerate(eps_list):
        pred = torch.cat([p[i].pred for p in parts])
        l2, linf = torch.cat([p[i].l2 for p in parts]), torch.cat([p[i].linf for p in parts])
        seconds = sum(p[i].seconds for p in parts) + (fit_seconds[i] if fit_seconds else 0.0)
        rows.append(row(spec.name, e, y, clean, pred, l2, linf, seconds, str(dev)))
    return with_version(rows, spec, params)


def _fit(spec: AttackSpec, model: nn.Module, batches: Batches,
         fit: Batches | tuple[torch.Tensor, torch.Tensor] | None, eps_list: list[float],
         dev: torch.device, seed: int, on_result: OnResult | None,
         params: dict[str, Any]) -> list[tuple[torch.Tensor, float]]:
    """One (v, fitting seconds) per eps."""
    from robustkit.attacks.universal_stream import STREAM_FITS

    out = []
    for e in eps_list:
        t0 = clock(dev)
        if _is_pair(fit):
            fx, fy = fit[0].to(dev), fit[1].to(dev)  # type: ignore[index]
            res = spec.fn(model, fx[:1], fy[:1], eps=e, fit_x=fx, fit_y=fy, seed=seed,
                          **params)
            if "v" not in res.info:
                raise ValueError(f"universal attack {spec.name!r} returned no info['v']")
            v = torch.as_tensor(res.info["v"]).to(dev)
        else:
            if spec.name not in STREAM_FITS:
                raise ValueError(f"universal attack {spec.name!r} cannot be fitted on a "
                                 f"stream (those that can: {', '.join(STREAM_FITS)}); pass "
                                 f"fit=(fit_x, fit_y)")
            fn, norm = STREAM_FITS[spec.name]
            uap = fn(model, batches if fit is None else fit, xi=e, norm=norm, seed=seed,
                     device=dev, **params)
            v = uap.v.to(dev)
            res = AttackResult(v[None], torch.zeros_like(v[None]),
                               torch.zeros(1, dtype=torch.bool, device=dev),
                               {"v": v, "uap": uap, "fooling_rate": uap.fooling_rate})
        if on_result is not None:
            on_result(e, res)
        out.append((v, clock(dev) - t0))
    return out


def _is_pair(fit: object) -> bool:
    return isinstance(fit, tuple) and len(fit) == 2 and all(torch.is_tensor(t) for t in fit)
