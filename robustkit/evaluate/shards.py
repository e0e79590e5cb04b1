"""One evaluation split into shards of samples, each shard one task on an executor
(this process, local processes, one process per device, a Dask cluster).

A shard is a run of consecutive samples, made of whole batches, so that every attack call
sees the same inputs whatever the number of workers; attacks draw their randomness per
sample id (:mod:`robustkit.attacks.rng`), so that the outcome of a sample does not depend
on its shard either. With an output folder, each finished shard is written at once
(:mod:`robustkit.evaluate.samples`) and a rerun with the same settings runs only the missing ones.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustkit.attacks import AttackSpec, get
from robustkit.attacks.base import eval_mode
from robustkit.data.stream import SplitRef
from robustkit.evaluate.checks import canonical
from robustkit.evaluate.runs import Context, OnResult, Outcome, norm_of, predict, run_block
from robustkit.executors import prepare_process
from robustkit.store import atomic_write

Data = SplitRef | tuple[torch.Tensor, torch.Tensor]  # what shards are cut from


@dataclass(frozen=True)
class ShardJob:
    """What every shard task needs (sent once per worker on Dask)."""

    model: nn.Module
    attack: str | AttackSpec  # a registry name where the spec cannot be pickled
    eps: tuple[float, ...]
    params: dict
    seed: int
    batch_size: int
    device: str
    threads: int | None = None  # torch intra-op threads in the worker (None: as it is)
    vs: tuple[torch.Tensor, ...] = ()  # universal attacks: the v fitted for each eps
    on_result: OnResult | None = None  # only where shards run in this process
    keep_x_adv: bool = False  # return each eps's adversarial inputs with the shard


@dataclass(frozen=True)
class ShardResult:
    start: int
    stop: int
    y: torch.Tensor
    clean: torch.Tensor
    outcomes: list[Outcome]
    seconds: float  # wall time of the task
    device: str
    x_adv: dict[float, torch.Tensor] | None = None  # per eps (CPU), when the job keeps them


def shard_task(job: ShardJob, data: SplitRef | tuple[torch.Tensor, torch.Tensor], start: int,
               stop: int, device: str | None = None) -> ShardResult:
    """Evaluate one shard: samples ``start .. stop`` of the data, which ``data`` holds
    (the shard's own (x, y)) or names (a split this process reads them from)."""
    t0 = time.perf_counter()
    prepare_process(job.threads)
    x, y = data.read(start, stop) if isinstance(data, SplitRef) else data
    dev = canonical(torch.device(device or job.device))
    model = job.model
    if _device_of(model) != dev:
        model = copy.deepcopy(model).to(dev)
    spec = get(job.attack) if isinstance(job.attack, str) else job.attack
    kept: dict[float | None, list[torch.Tensor]] = {}

    def keep(e: float | None, res: Any) -> None:
        kept.setdefault(e, []).append(res.x_adv.detach().cpu())
        if job.on_result is not None:
            job.on_result(e, res)

    with eval_mode(model):
        clean = torch.cat([predict(model, x[s:s + job.batch_size].to(dev)).cpu()
                           for s in range(0, len(x), job.batch_size)])
        ctx = Context(dev, job.batch_size, job.seed, start, keep if job.keep_x_adv else
                      job.on_result, job.params, clean, job.vs)
        outcomes = run_block(spec, model, x, y, list(job.eps), ctx)
    x_adv = _adversarial(spec, job, x, kept) if job.keep_x_adv else None
    return ShardResult(start, start + len(x), y.cpu(), clean, outcomes,
                       time.perf_counter() - t0, str(dev), x_adv)


def _adversarial(spec: AttackSpec, job: ShardJob, x: torch.Tensor,
                 kept: dict[float | None, list[torch.Tensor]]) -> dict[float, torch.Tensor]:
    """Each eps's x_adv: as the attack returned it (fixed), its minimal point where within
    eps else x (minimal), clamp(x + v, 0, 1) (universal)."""
    x = x.cpu()
    if spec.kind == "universal":
        return {e: (x + v.reshape(x.shape[1:])).clamp(0, 1) for e, v in zip(job.eps, job.vs)}
    if spec.kind == "minimal":
        found = torch.cat(kept[None])
        size = norm_of(found - x, str(job.params.get("norm", spec.norm)))
        shape = (-1,) + (1,) * (x.dim() - 1)
        return {e: torch.where((size <= e).view(shape), found, x) for e in job.eps}
    return {e: torch.cat(kept[e]) for e in job.eps}


def _device_of(model: nn.Module) -> torch.device:
    t: torch.Tensor | None = next(iter(model.parameters()), None)
    if t is None:
        t = next(iter(model.buffers()), None)
    return canonical(t.device) if t is not None else torch.device("cpu")


def plan(n: int, shard_size: int, batch_size: int) -> list[tuple[int, int]]:
    """Shards [start, stop) over n samples: ``shard_size`` rounded up to whole batches.

    Example:
        >>> plan(10, 4, 3)
        [(0, 6), (6, 10)]
    """
    size = max(batch_size, math.ceil(shard_size / batch_size) * batch_size)
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def default_shard_size(n: int, workers: int, batch_size: int) -> int:
    """About four shards per worker (the slowest shard then delays the end little), at most
    one batch each."""
    return max(1, min(batch_size, math.ceil(n / (4 * max(1, workers)))))


def shard_data(x: torch.Tensor | SplitRef, y: torch.Tensor | None, batch_size: int
          ) -> tuple[Data, tuple[torch.Tensor, torch.Tensor]]:
    """What shards are cut from, and the samples the checks look at (all of x, or a
    split's first batch: its labels are checked whole, without reading its inputs)."""
    if isinstance(x, SplitRef):
        if y is not None:
            raise ValueError("y must be None when x is a SplitRef (its labels are read)")
        return x, x.read(0, min(len(x), batch_size))
    if y is None:
        raise ValueError("y is required when x is a tensor")
    return (x, y), (x, y)


def whole(data: Data) -> tuple[torch.Tensor, torch.Tensor]:
    """All the inputs and labels (a split is read whole)."""
    return data.read(0, len(data)) if isinstance(data, SplitRef) else data


def run_shards(executor: Any, job: ShardJob, data: Data, shards: list[tuple[int, int]], *,
               skip: frozenset[tuple[int, int]] | set[tuple[int, int]] = frozenset()
               ) -> Iterator[ShardResult]:
    """Run the shards not in ``skip`` on ``executor``, yielding each result as it finishes.

    A task gets its own samples: with a :class:`SplitRef` only the reference (the worker
    reads them), else copies of its slices (a slice of x pickles all of x's storage).
    """
    todo = [s for s in shards if s not in skip]
    shared = executor.share(job)
    args = [(shared, data if isinstance(data, SplitRef) else
             (data[0][a:b].clone(), data[1][a:b].clone()), a, b) for a, b in todo]
    for _, res in executor.imap(shard_task, args):
        yield res


def fingerprint(model: nn.Module, name: str, data: Data, eps: list[float], params: dict[str, Any], seed: int, batch_size: int,
                shards: list[tuple[int, int]]) -> dict[str, Any]:
    """What must match for a rerun to reuse finished shards (digests of model and data)."""
    return {"attack": name, "eps": eps, "params": {k: repr(v) for k, v in sorted(params.items())},
            "seed": seed, "batch_size": batch_size, "shards": [list(s) for s in shards],
            "model_sha256": model_digest(model), "data_sha256": data_digest(data)}


def check_folder(folder: Path, expected: dict[str, Any]) -> None:
    """Start ``folder`` for a run, or check that the run there was started with the same
    settings (else a ValueError naming what differs)."""
    manifest = folder / "run.json"
    if manifest.is_file():
        found = json.loads(manifest.read_text())
        diff = sorted(k for k in expected if found.get(k) != expected[k])
        if diff:
            raise ValueError(f"samples folder {folder} holds shards of another evaluation "
                             f"(differs in: {', '.join(diff)}); use another folder or "
                             f"delete it")
        return
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(manifest, json.dumps(expected, indent=1).encode())


def model_digest(model: nn.Module) -> str:
    """sha256 over the model's state (names, dtypes, shapes and bytes), in name order."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        if not torch.is_tensor(t):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def data_digest(data: Data) -> str:
    """sha256 over the inputs and labels (dtype, shape and bytes); a split is read batch by
    batch (memory of one batch), its digest over the batches in order."""
    h = hashlib.sha256()
    if isinstance(data, SplitRef):
        for xb, yb in data.batches(1024):
            h.update(data_digest((xb, yb)).encode())
        return h.hexdigest()
    for t in data:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
