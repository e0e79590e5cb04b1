"""The runs of one evaluation over one block of samples (all of x, or one shard): per eps,
what every sample got (prediction on x_adv, norms of the applied delta, iterations,
queries, which attack of an ensemble broke it) and the seconds it took.

Sample ``i`` of the block is sample ``offset + i`` of the evaluated data; attacks get those
ids (``sample_ids=``), so that their random draws, and so each sample's outcome, do not
depend on the batch or shard it lands in (:mod:`robustkit.attacks.rng`).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robustkit.attacks import AttackResult, AttackSpec
from robustkit.evaluate.checks import clock

OnResult = Callable[["float | None", AttackResult], None]


@dataclass(frozen=True)
class Outcome:
    """Per sample at one eps (CPU): ``pred`` on x_adv, ``l2``/``linf`` of the applied delta,
    ``iterations`` (int64), ``queries`` (int64, -1 where the attack does not count them),
    ``broken_by`` (the ensemble's attack that broke it, "" where none or not an ensemble),
    and the seconds of the run."""

    pred: torch.Tensor
    l2: torch.Tensor
    linf: torch.Tensor
    iterations: torch.Tensor
    queries: torch.Tensor
    broken_by: list[str]
    seconds: float


@dataclass(frozen=True)
class Context:
    dev: torch.device
    batch_size: int
    seed: int
    offset: int  # the id of the block's first sample
    on_result: OnResult | None
    params: dict
    clean: torch.Tensor  # predictions on x (CPU)
    vs: tuple[torch.Tensor, ...] = ()  # universal attacks: the fitted v of each eps


def run_block(spec: AttackSpec, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
              eps_list: list[float], ctx: Context) -> list[Outcome]:
    """One :class:`Outcome` per eps for the samples of (x, y)."""
    if spec.kind == "universal":
        return [_apply(model, x, v, ctx) for v in ctx.vs]
    if spec.kind == "minimal":
        return _minimal(spec, model, x, y, eps_list, ctx)
    if spec.kind != "fixed":
        raise ValueError(f"attack {spec.name!r} has unknown kind {spec.kind!r}")
    if spec.curve is not None and len(eps_list) > 1:
        return _curve(spec, model, x, y, eps_list, ctx)
    return [_fixed(spec, model, x, y, e, ctx) for e in eps_list]


def _call(fn: Callable[..., Any], ctx: Context, s: int, t: int, model: nn.Module,
          xb: torch.Tensor, yb: torch.Tensor, **kw: Any) -> Any:
    """``fn`` on the batch of samples [s, t) of the block, with their ids where it takes
    them (an attack without ``sample_ids`` gets the old per-batch seed, seed + first id)."""
    if takes_ids(fn):
        ids = torch.arange(ctx.offset + s, ctx.offset + t, device=xb.device)
        return fn(model, xb, yb, seed=ctx.seed, sample_ids=ids, **kw)
    return fn(model, xb, yb, seed=ctx.seed + ctx.offset + s, **kw)


def takes_ids(fn: Callable[..., Any]) -> bool:
    params = inspect.signature(fn).parameters
    return "sample_ids" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _fixed(spec: AttackSpec, model: nn.Module, x: torch.Tensor, y: torch.Tensor, e: float,
           ctx: Context) -> Outcome:
    def one(s: int, t: int) -> tuple[Any, ...]:
        xb, yb = x[s:t].to(ctx.dev), y[s:t].to(ctx.dev)
        res = _call(spec.fn, ctx, s, t, model, xb, yb, eps=e, **ctx.params)
        if ctx.on_result is not None:
            ctx.on_result(e, res)
        return per_sample(model, res)

    t0 = clock(ctx.dev)
    parts = batched(one, len(x), ctx.batch_size)
    return _outcome(parts, clock(ctx.dev) - t0)


def _curve(spec: AttackSpec, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
           eps_list: list[float], ctx: Context) -> list[Outcome]:
    """A fixed attack with a grid path (``spec.curve``): one run per batch over all eps;
    ``seconds`` is the time of the whole grid, repeated on every row."""
    k = len(eps_list)

    def one(s: int, t: int) -> tuple[Any, ...]:
        xb, yb = x[s:t].to(ctx.dev), y[s:t].to(ctx.dev)
        out: list[Any] = []
        results = _call(spec.curve, ctx, s, t, model, xb, yb,  # type: ignore[arg-type]
                        eps=eps_list, **ctx.params)
        for e, res in zip(eps_list, results):
            if ctx.on_result is not None:
                ctx.on_result(e, res)
            out += per_sample(model, res)
        return tuple(out)

    t0 = clock(ctx.dev)
    flat = batched(one, len(x), ctx.batch_size)
    seconds = clock(ctx.dev) - t0
    w = len(flat) // k
    return [_outcome(flat[w * i:w * i + w], seconds) for i in range(k)]


def _minimal(spec: AttackSpec, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             eps_list: list[float], ctx: Context) -> list[Outcome]:
    """One run; for each eps a sample keeps its x_adv only if its delta (in the attack's
    norm) is <= eps, else x."""
    norm = ctx.params.get("norm", spec.norm)

    def one(s: int, t: int) -> tuple[Any, ...]:
        xb, yb = x[s:t].to(ctx.dev), y[s:t].to(ctx.dev)
        res = _call(spec.fn, ctx, s, t, model, xb, yb, **ctx.params)
        if ctx.on_result is not None:
            ctx.on_result(None, res)
        size = norm_of(res.delta, str(res.info.get("norm", norm)))
        return (*per_sample(model, res), size.cpu())

    t0 = clock(ctx.dev)
    *parts, size = batched(one, len(x), ctx.batch_size)
    seconds = clock(ctx.dev) - t0
    pred, l2, linf, iters, queries, by = parts
    out = []
    for e in eps_list:
        keep = size <= e
        out.append(Outcome(torch.where(keep, pred, ctx.clean), l2 * keep, linf * keep, iters,
                           queries, [b if k else "" for b, k in zip(by, keep.tolist())],
                           seconds))
    return out


def _apply(model: nn.Module, x: torch.Tensor, v: torch.Tensor, ctx: Context) -> Outcome:
    """A fitted universal v on every sample: x_adv = clamp(x + v, 0, 1)."""
    def one(s: int, t: int) -> tuple[Any, ...]:
        xb = x[s:t].to(ctx.dev)
        x_adv = (xb + v.to(ctx.dev).reshape(xb.shape[1:])).clamp(0, 1)
        flat = (x_adv - xb).reshape(len(xb), -1)
        n = len(xb)
        return (predict(model, x_adv).cpu(), flat.norm(dim=1).cpu(),
                flat.abs().amax(dim=1).cpu(), torch.zeros(n, dtype=torch.long),
                torch.full((n,), -1, dtype=torch.long), [""] * n)

    t0 = clock(ctx.dev)
    parts = batched(one, len(x), ctx.batch_size)
    return _outcome(parts, clock(ctx.dev) - t0)


def _outcome(parts: tuple[Any, ...], seconds: float) -> Outcome:
    pred, l2, linf, iterations, queries, broken_by = parts
    return Outcome(pred, l2, linf, iterations, queries, broken_by, seconds)


def per_sample(model: nn.Module, res: AttackResult) -> tuple[Any, ...]:
    """(pred, l2, linf, iterations, queries, broken_by) of one attack call, on the CPU."""
    n = len(res.x_adv)
    pred = res.pred if res.pred is not None else predict(model, res.x_adv)
    q = res.info.get("queries")
    queries = q.long().cpu() if torch.is_tensor(q) and q.shape == (n,) else \
        torch.full((n,), -1, dtype=torch.long)
    by = res.info.get("broken_by")
    broken_by = [str(b) for b in by] if isinstance(by, list) and len(by) == n else [""] * n
    return (pred.cpu(), res.l2.cpu(), res.linf.cpu(), res.iterations.long().cpu(), queries,
            broken_by)


def batched(fn: Callable[[int, int], Any], n: int, batch_size: int) -> Any:
    """Call ``fn(start, stop)`` over [0, n) in batches and concatenate the (tuples of) CPU
    tensors or lists it returns; on CUDA out-of-memory halve the batch and retry."""
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
        return tuple(_cat(list(p)) for p in zip(*parts))
    return _cat(parts)


def _cat(parts: list[Any]) -> Any:
    if isinstance(parts[0], list):
        return [v for p in parts for v in p]
    return torch.cat(parts)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).argmax(1)


def norm_of(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.reshape(len(delta), -1)
    if norm == "linf":
        return flat.abs().amax(dim=1)
    if norm in ("l2", "l1"):
        return flat.norm(p=int(norm[1]), dim=1)
    if norm == "l0":
        return (flat != 0).sum(dim=1).to(delta.dtype)
    raise ValueError(f"norm must be one of linf, l2, l1, l0; got {norm!r}")


def fit_universal(spec: AttackSpec, model: nn.Module, fx: torch.Tensor, fy: torch.Tensor,
                  eps_list: list[float], dev: torch.device, seed: int,
                  on_result: OnResult | None, params: dict[str, Any]
                  ) -> list[tuple[torch.Tensor, float]]:
    """One (v, fitting seconds) per eps: a universal attack fitted once, before any shard."""
    out = []
    for e in eps_list:
        t0 = clock(dev)
        res: AttackResult = spec.fn(model, fx.to(dev), fy.to(dev), eps=e, seed=seed, **params)
        if on_result is not None:
            on_result(e, res)
        if "v" not in res.info:
            raise ValueError(f"universal attack {spec.name!r} returned no info['v']")
        v = torch.as_tensor(res.info["v"]).detach().reshape(fx.shape[1:]).cpu()
        out.append((v, clock(dev) - t0))
    return out
