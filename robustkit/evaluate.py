"""Attack x model -> rows: robust accuracy, success/fooling/misclassification rates, norms and
speed per eps, for every kind of attack (fixed budget, minimal perturbation, universal).

Definitions (per row, over the n evaluated samples):
    clean_accuracy          pred(x) == y
    robust_accuracy         pred(x_adv) == y
    success_rate            pred(x_adv) != y, among the clean-correct samples (NaN if none)
    fooling_rate            pred(x_adv) != pred(x)  (the UAP paper's definition)
    misclassification_rate  pred(x_adv) != y
    l2_*, linf_*            norms of the delta actually applied, x_adv - x
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from robustkit.attacks import AttackResult, AttackSpec, get
from robustkit.attacks.base import eval_mode
from robustkit.certify.columns import certify_options, with_certificates
from robustkit.models.registry import model_device, resolve_device

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ("attack", "eps", "n", "clean_accuracy", "robust_accuracy", "success_rate",
           "fooling_rate", "misclassification_rate", "l2_mean", "l2_median", "linf_mean",
           "linf_median", "seconds", "samples_per_second", "device")

OnResult = Callable[["float | None", AttackResult], None]


def evaluate(model: nn.Module, attack: str | AttackSpec, x: torch.Tensor, y: torch.Tensor, *,
             eps: float | Sequence[float], batch_size: int = 1024,
             device: str | torch.device | None = None, fit_x: torch.Tensor | None = None,
             fit_y: torch.Tensor | None = None, seed: int = 0,
             on_result: OnResult | None = None,
             certify: bool | Mapping[str, Any] | None = None, **params: Any
             ) -> list[dict[str, Any]]:
    """Attack ``model`` on (x, y) at every eps and measure the outcome, one row per eps.

    Fixed-budget attacks run once per eps, except those with a grid path (``autoattack``:
    ``AttackSpec.curve``), which run once over the eps list, each larger eps attacking
    only the samples that survived the smaller ones (``seconds`` is then the time of the
    whole grid, repeated on every row). Minimal attacks (DeepFool) run once; for each
    eps a sample keeps its x_adv only if its delta (in the attack's norm) is <= eps, else x.
    Universal attacks fit one v per eps (radius xi = eps) on ``fit_x``/``fit_y`` (default:
    x, y themselves) and apply x_adv = clamp(x + v, 0, 1). Inputs go through the model in
    batches of ``batch_size``; on CUDA out-of-memory the batch halves and retries.

    Args:
        model: classifier returning logits (N, K); left unchanged (a copy is moved when
            ``device`` differs from the model's).
        attack: a registry name (``"fgsm"``, ``"foolbox:LinfPGD"``...) or an AttackSpec.
        x: inputs (N, ...) in [0, 1], on any device.
        y: int64 (N,) labels in [0, K).
        eps: one budget or a list (each >= 0).
        batch_size: samples per attack call (>= 1).
        device: where to compute: None (the model's device), ``"auto"``, ``"cpu"``, ...
        fit_x, fit_y: data a universal perturbation is fitted on (held out from x).
        seed: base seed; batch b starting at sample s uses ``seed + s``.
        on_result: called with (eps, AttackResult) for every attack call (eps None for the
            single run of a minimal attack); e.g. to keep a UAP's ``info["v"]``.
        certify: also certify (x, y) at every eps (``True``, or ``{"method": ...,
            "time_limit": ..., "params": {...}}``; default: no): rows gain
            ``robustkit.certify.columns.COLUMNS``, and a certified sample the attack broke
            raises ``CertificateContradiction``.
        **params: attack hyperparameters.

    Returns:
        One dict per eps with the keys of ``COLUMNS``, in that order. For minimal attacks
        ``seconds`` is the time of the one run, repeated on every row.

    Example:
        >>> from robustkit import load_dataset, models
        >>> model, _ = models.train("linear", "digits", epochs=5)
        >>> x, y, _ = load_dataset("digits", "test", limit=100)
        >>> rows = evaluate(model, "fgsm", x, y, eps=[0.0, 0.1])
        >>> rows[0]["robust_accuracy"] == rows[0]["clean_accuracy"]
        True
    """
    spec = get(attack) if isinstance(attack, str) else attack
    if not isinstance(spec, AttackSpec):
        raise TypeError(f"attack must be a name or an AttackSpec, got {type(attack).__name__}")
    eps_list = _check_eps(eps)
    found = spec.check(params)  # every bad name or value before any work
    if found:
        raise ValueError("; ".join(found))
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    cert = certify_options(certify)
    dev = _canonical(resolve_device(device) if device is not None else model_device(model))
    if _canonical(model_device(model)) != dev:
        model = copy.deepcopy(model).to(dev)
    with eval_mode(model):
        k = _check_data(model, x, y, "x", "y", dev)
        if fit_x is not None or fit_y is not None:
            if fit_x is None or fit_y is None:
                raise ValueError("fit_x and fit_y must be given together")
            _check_data(model, fit_x, fit_y, "fit_x", "fit_y", dev, k)
        clean = _batched(lambda s, e: _predict(model, x[s:e].to(dev)), len(x), batch_size)
        run = {"fixed": _fixed, "minimal": _minimal, "universal": _universal}.get(spec.kind)
        if spec.kind == "fixed" and spec.curve is not None and len(eps_list) > 1:
            run = _curve
        if run is None:
            raise ValueError(f"attack {spec.name!r} has unknown kind {spec.kind!r}")
        ctx = _Context(dev, batch_size, fit_x, fit_y, seed, on_result, params, clean)
        stats = run(spec, model, x, y, eps_list, ctx)
        rows = [_row(spec.name, e, y.cpu(), clean, *s, str(dev)) for e, s in zip(eps_list, stats)]
        if cert is not None:
            norm = str(params.get("norm", spec.norm))
            rows = with_certificates(rows, model, x.to(dev), y.to(dev), norm=norm, options=cert,
                                     preds=[s[0] for s in stats], attack=spec.name,
                                     dists=[s[1] if norm == "l2" else s[2] for s in stats])
    return rows


def evaluate_frame(*args: Any, **kwargs: Any) -> pd.DataFrame:
    """:func:`evaluate` as a pandas DataFrame with the columns of ``COLUMNS``.

    Example:
        >>> from robustkit import load_dataset, models
        >>> model, _ = models.train("linear", "digits", epochs=5)
        >>> x, y, _ = load_dataset("digits", "test", limit=50)
        >>> list(evaluate_frame(model, "noise", x, y, eps=[0.1]).columns) == list(COLUMNS)
        True
    """
    import pandas as pd

    return pd.DataFrame(evaluate(*args, **kwargs), columns=list(COLUMNS))


# Per eps: (pred on x_adv, l2 of applied delta, linf of applied delta, seconds); all CPU.
Stats = tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]


@dataclass(frozen=True)
class _Context:
    dev: torch.device
    batch_size: int
    fit_x: torch.Tensor | None
    fit_y: torch.Tensor | None
    seed: int
    on_result: OnResult | None
    params: dict
    clean: torch.Tensor  # predictions on x (CPU)


def _fixed(spec: AttackSpec, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
           eps_list: list[float], ctx: _Context) -> list[Stats]:
    dev, on_result = ctx.dev, ctx.on_result
    out = []
    for e in eps_list:
        def one(s: int, t: int, e: float = e) -> tuple[torch.Tensor, ...]:
            xb, yb = x[s:t].to(dev), y[s:t].to(dev)
            res = spec.fn(model, xb, yb, eps=e, seed=ctx.seed + s, **ctx.params)
            if on_result is not None:
                on_result(e, res)
            pred = res.pred if res.pred is not None else _predict(model, res.x_adv)
            return pred.cpu(), res.l2.cpu(), res.linf.cpu()

        t0 = _clock(dev)
        pred, l2, linf = _batched(one, len(x), ctx.batch_size)
        out.append((pred, l2, linf, _clock(dev) - t0))
    return out


def _curve(spec: AttackSpec, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
           eps_list: list[float], ctx: _Context) -> list[Stats]:
    """A fixed attack with a grid path (``spec.curve``): one run per batch over all eps;
    ``seconds`` is the time of the whole grid, repeated on every row."""
    dev, on_result, k = ctx.dev, ctx.on_result, len(eps_list)

    def one(s: int, t: int) -> tuple[torch.Tensor, ...]:
        xb, yb = x[s:t].to(dev), y[s:t].to(dev)
        out: list[torch.Tensor] = []
        for e, res in zip(eps_list, spec.curve(model, xb, yb, eps=eps_list,  # type: ignore
                                               seed=ctx.seed + s, **ctx.params)):
            if on_result is not None:
                on_result(e, res)
            pred = res.pred if res.pred is not None else _predict(model, res.x_adv)
            out += [pred.cpu(), res.l2.cpu(), res.linf.cpu()]
        return tuple(out)

    t0 = _clock(dev)
    flat = _batched(one, len(x), ctx.batch_size)
    seconds = _clock(dev) - t0
    return [(*flat[3 * i:3 * i + 3], seconds) for i in range(k)]


def _minimal(spec: AttackSpec, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             eps_list: list[float], ctx: _Context) -> list[Stats]:
    dev, on_result = ctx.dev, ctx.on_result
    norm = ctx.params.get("norm", spec.norm)

    def one(s: int, t: int) -> tuple[torch.Tensor, ...]:
        xb, yb = x[s:t].to(dev), y[s:t].to(dev)
        res = spec.fn(model, xb, yb, seed=ctx.seed + s, **ctx.params)
        if on_result is not None:
            on_result(None, res)
        pred = res.pred if res.pred is not None else _predict(model, res.x_adv)
        size = _norm(res.delta, str(res.info.get("norm", norm)))
        return pred.cpu(), res.l2.cpu(), res.linf.cpu(), size.cpu()

    t0 = _clock(dev)
    pred, l2, linf, size = _batched(one, len(x), ctx.batch_size)
    seconds = _clock(dev) - t0
    out = []
    for e in eps_list:
        keep = size <= e
        out.append((torch.where(keep, pred, ctx.clean), l2 * keep, linf * keep, seconds))
    return out


def _universal(spec: AttackSpec, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               eps_list: list[float], ctx: _Context) -> list[Stats]:
    dev, on_result = ctx.dev, ctx.on_result
    fx, fy = (x, y) if ctx.fit_x is None or ctx.fit_y is None else (ctx.fit_x, ctx.fit_y)
    out = []
    for e in eps_list:
        t0 = _clock(dev)
        res = spec.fn(model, fx.to(dev), fy.to(dev), eps=e, seed=ctx.seed, **ctx.params)
        if on_result is not None:
            on_result(e, res)
        if "v" not in res.info:
            raise ValueError(f"universal attack {spec.name!r} returned no info['v']")
        v = torch.as_tensor(res.info["v"]).to(dev).reshape(x.shape[1:])

        def one(s: int, t: int, v: torch.Tensor = v) -> tuple[torch.Tensor, ...]:
            xb = x[s:t].to(dev)
            x_adv = (xb + v).clamp(0, 1)
            flat = (x_adv - xb).reshape(len(xb), -1)
            return (_predict(model, x_adv).cpu(), flat.norm(dim=1).cpu(),
                    flat.abs().amax(dim=1).cpu())

        pred, l2, linf = _batched(one, len(x), ctx.batch_size)
        out.append((pred, l2, linf, _clock(dev) - t0))
    return out


def _row(name: str, eps: float, y: torch.Tensor, clean: torch.Tensor, pred: torch.Tensor,
         l2: torch.Tensor, linf: torch.Tensor, seconds: float, device: str) -> dict[str, Any]:
    correct = clean == y
    n = len(y)
    success = _mean(pred[correct] != y[correct]) if correct.any() else math.nan
    return dict(zip(COLUMNS, (
        name, float(eps), n, _mean(correct), _mean(pred == y), success, _mean(pred != clean),
        _mean(pred != y), _mean(l2), _median(l2), _mean(linf), _median(linf), seconds,
        n / seconds if seconds > 0 else math.inf, device,
    )))


def _batched(fn: Callable[[int, int], Any], n: int, batch_size: int) -> Any:
    """Call ``fn(start, stop)`` over [0, n) in batches and concatenate the (tuples of)
    CPU tensors it returns; on CUDA out-of-memory halve the batch and retry."""
    parts: list[Any] = []
    start = 0
    while start < n:
        stop = min(start + batch_size, n)
        try:
            parts.append(fn(start, stop))
        except torch.cuda.OutOfMemoryError:
            if batch_size == 1:
                raise
            batch_size = max(1, batch_size // 2)
            torch.cuda.empty_cache()
            continue
        start = stop
    if isinstance(parts[0], tuple):
        return tuple(torch.cat(p) for p in zip(*parts))
    return torch.cat(parts)


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).argmax(1)


def _norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.reshape(len(delta), -1)
    if norm == "linf":
        return flat.abs().amax(dim=1)
    if norm in ("l2", "l1"):
        return flat.norm(p=int(norm[1]), dim=1)
    if norm == "l0":
        return (flat != 0).sum(dim=1).to(delta.dtype)
    raise ValueError(f"norm must be one of linf, l2, l1, l0; got {norm!r}")


def _check_eps(eps: float | Sequence[float]) -> list[float]:
    values = [eps] if isinstance(eps, (int, float)) else list(eps)
    if not values:
        raise ValueError("eps must be a number or a non-empty list of numbers")
    for e in values:
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not 0 <= e < math.inf:
            raise ValueError(f"eps must be finite numbers >= 0, got {e!r}")
    return [float(e) for e in values]


def _check_data(model: nn.Module, x: torch.Tensor, y: torch.Tensor, xname: str, yname: str,
                dev: torch.device, n_classes: int | None = None) -> int:
    """Validate x, y against the data contract and the model; return its class count."""
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise TypeError(f"{xname} must be a floating-point tensor, got {type(x).__name__}")
    if not torch.is_tensor(y) or y.dtype != torch.int64 or y.dim() != 1:
        raise TypeError(f"{yname} must be an int64 tensor of shape (N,)")
    if len(x) != len(y):
        raise ValueError(f"len({xname})={len(x)} != len({yname})={len(y)}")
    if len(x) == 0:
        raise ValueError(f"{xname} is empty")
    if not torch.isfinite(x).all():
        raise ValueError(f"{xname} contains NaN or inf")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise ValueError(f"{xname} must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    out = _probe(model, x[:2].to(dev))
    if out.dim() != 2 or out.shape[0] != min(2, len(x)):
        raise ValueError(f"model must return logits of shape (N, n_classes); for "
                         f"{min(2, len(x))} inputs it returned shape {tuple(out.shape)}")
    k = out.shape[1] if n_classes is None else n_classes
    if int(y.min()) < 0 or int(y.max()) >= k:
        raise ValueError(f"{yname} must hold labels in [0, {k}) (the model's classes), got "
                         f"range [{int(y.min())}, {int(y.max())}]")
    return k


def _probe(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:
        raise ValueError(f"model failed on inputs of shape {tuple(x.shape)}: {exc}") from exc
    if not torch.is_tensor(out):
        raise ValueError(f"model must return a tensor of logits, got {type(out).__name__}")
    return out


def _canonical(dev: torch.device) -> torch.device:
    if dev.type == "cuda" and dev.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return dev


def _clock(dev: torch.device) -> float:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return time.perf_counter()


def _mean(t: torch.Tensor) -> float:
    return float(t.double().mean())


def _median(t: torch.Tensor) -> float:
    return float(torch.quantile(t.double(), 0.5))
