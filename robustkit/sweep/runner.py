"""Run a sweep: validate, train each model once, evaluate the unfinished cells, report.

Phases, each spread over the executor:
1. models: every distinct model key the unfinished cells need and the store lacks is
   trained once (undefended and training defenses first, then defenses that wrap a
   fitted model), whatever the number of workers;
2. galleries: DeepFool minimal perturbations of the same few test inputs, per model;
3. cells: each finished cell's rows are appended to ``results.csv`` at once (one write,
   fsync) by this process only. Rerunning skips rows already there, so a killed sweep
   loses at most the cells in flight.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from robustkit.sweep import artifacts, results
from robustkit.sweep.cell_shards import Pending, is_sharded
from robustkit.sweep.cells import Cell, ModelJob, expand, is_wrapper, model_jobs, model_key
from robustkit.sweep.checks import Evidence, is_checked
from robustkit.sweep.executors import make_executor
from robustkit.sweep.jobdata import is_ready
from robustkit.sweep.results import ResultsWriter, eps_key
from robustkit.sweep.spec import NO_DEFENSE, DefenseEntry, Spec
from robustkit.sweep.tasks import Context, gallery_task, is_trained, train_task, wave_task


@dataclass
class SweepSummary:
    """What a sweep did (also written to ``run.json``)."""

    out_dir: str
    cells: int
    skipped: int
    run: int
    errors: int
    rows: int
    models_trained: int
    seconds: float
    executor: str
    report: str | None = None
    report_error: str | None = None
    model_errors: dict[str, str] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase
    stale: int = 0  # rows in results.csv of cells no longer in the specs


def run_sweep(specs: Sequence[Spec], out: str | os.PathLike, *, workers: int = 0,
              dask: Any = None, device: str = "cpu", data_root: str | None = None,
              models_dir: str | os.PathLike | None = None, retry_errors: bool = False,
              threads: int | None = None, report: bool = True, progress: bool = False,
              command: Sequence[str] = (), validate: bool = True,
              workdir: str | os.PathLike = "runs") -> SweepSummary:
    """Run every cell of ``specs`` not yet in ``<out>/results.csv``.

    Args:
        specs: parsed specs (:func:`robustkit.sweep.load_spec`); validated first unless
            ``validate=False``.
        out: output folder (``results.csv``, ``run.json``, ``artifacts/``, ``models/``).
        workers: N > 1 runs tasks in N local processes; 0 or 1 runs them here.
        dask: a ``dask.distributed`` scheduler address or ``Client``.
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` for training and attacks.
        data_root: where file-based datasets live (default ``$ROBUSTKIT_DATA``).
        models_dir: the model store (default ``<out>/models``); share one between sweeps.
        retry_errors: drop rows with ``status=error`` and run those cells again.
        threads: torch intra-op threads per task (default 1, on Dask too). Rows are
            bit-identical across executors run with the same ``threads``; timing columns
            always differ.
        report: build ``index.html`` with ``robustkit.report.build`` at the end.
        progress: one progress bar over cells on stderr (when stderr is not a terminal:
            a status line every ``$ROBUSTKIT_PROGRESS_SECONDS`` seconds, default 10).
        command: the command line, recorded in ``run.json``.
        workdir: the workspace where ``stored = "NAME"`` models are found (as for
            ``robustkit attack --workdir``).

    Returns:
        A :class:`SweepSummary`.

    Raises:
        SpecError: a spec is invalid (nothing runs).

    Example:
        >>> from robustkit.sweep import load_spec
        >>> run_sweep([load_spec("attacks/digits.toml")], "reports/digits")  # doctest: +SKIP
    """
    from robustkit.models import resolve_device
    from robustkit.sweep.stored import resolved
    from robustkit.sweep.validate import validate as check

    t0 = time.perf_counter()
    if validate:
        check(specs, data_root=data_root, workdir=workdir)
    specs = resolved(specs, workdir)  # stored models: found and keyed by their content
    out_dir = Path(out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if threads is None:
        threads = 1  # small models gain little from intra-op threads, and lose much when
        # the cores are shared (OpenMP threads spinning); one thread per task, one task per
        # core (``workers``) is faster and makes rows identical across executors. Also on
        # Dask: a worker started without a nanny (which sets OMP_NUM_THREADS=1), or with
        # several task threads, would otherwise give every task all the machine's cores.
    ctx = Context(str(Path(models_dir).resolve() if models_dir else out_dir / "models"),
                  str(data_root) if data_root else None, str(resolve_device(device)), threads)
    Path(ctx.models_dir).mkdir(parents=True, exist_ok=True)
    with results.exclusive(out_dir):
        summary, run_info = _execute(specs, out_dir, ctx, workers=workers, dask=dask,
                                     retry_errors=retry_errors, progress=progress,
                                     command=command, t0=t0)
    summary.seconds = time.perf_counter() - t0
    artifacts.finish_run(out_dir, run_info, summary)
    if report:
        t4 = time.perf_counter()
        _report(out_dir, summary)
        summary.phases["report"] = time.perf_counter() - t4
        artifacts.finish_run(out_dir, run_info, summary)
    return summary


def _execute(specs: Sequence[Spec], out_dir: Path, ctx: Context, *, workers: int, dask: Any,
             retry_errors: bool, progress: bool, command: Sequence[str], t0: float
             ) -> tuple[SweepSummary, dict[str, Any]]:
    """Find the unfinished rows, then train, draw galleries and run cells (under the lock)."""
    csv_path = out_dir / "results.csv"
    results.repair(csv_path)
    if retry_errors:
        results.rewrite_without(csv_path, {(r["cell_id"], r["eps"])
                                           for r in results.read_rows(csv_path)
                                           if r.get("status") == "error"})
    existing = results.read_rows(csv_path)
    done = results.done_keys(existing)
    cells = expand(specs)
    todo = [(c, tuple(e for e in c.eps if (c.cell_id, eps_key(e)) not in done)) for c in cells]
    todo = [(c, eps) for c, eps in todo if eps]
    run_info = artifacts.start_run(out_dir, specs, ctx, command, workers, dask)
    summary = SweepSummary(str(out_dir), len(cells), len(cells) - len(todo), 0, 0, 0, 0, 0.0,
                           "serial")
    ids = {c.cell_id for c in cells}
    summary.stale = sum(r["cell_id"] not in ids for r in existing)
    bar = _bar(len(todo), progress)
    labels: list[str] = []  # what each task of the current phase is, for the bar
    ex = make_executor(workers=workers, dask=dask, threads=ctx.threads,
                       before=lambda i: _name(bar, labels[i]) if i < len(labels) else None)
    threads_before = torch.get_num_threads()
    summary.executor = ex.name
    try:
        with ResultsWriter(csv_path) as writer:
            t1 = time.perf_counter()
            failed = _train_models(ex, [c for c, _ in todo], ctx, summary, labels, bar)
            t2 = time.perf_counter()
            _galleries(ex, cells, ctx, out_dir, labels)
            t3 = time.perf_counter()
            _run_cells(ex, todo, failed, ctx, writer, out_dir, summary, labels, bar,
                       Evidence(existing))
            summary.phases = {"setup": t1 - t0, "train": t2 - t1, "galleries": t3 - t2,
                              "cells": time.perf_counter() - t3}
    finally:
        ex.close()
        torch.set_num_threads(threads_before)  # serial tasks ran in this process
        if bar is not None:
            bar.close()
    return summary, run_info


def _train_models(ex: Any, todo: list[Cell], ctx: Context, summary: SweepSummary,
                  labels: list[str], bar: Any) -> dict[str, str]:
    """Train what ``todo`` needs, each key once: undefended and training defenses first,
    then the defenses that wrap an undefended model. Return {model_key: error}."""
    none = DefenseEntry(NO_DEFENSE, NO_DEFENSE)
    first: dict[str, ModelJob] = {}
    second: dict[str, tuple[ModelJob, str]] = {}  # wrapper key -> (job, base key)
    for j in model_jobs(todo):
        if j.model.stored is not None:
            continue  # evaluated as stored, never trained
        if not is_wrapper(j.defense):
            first.setdefault(j.key, j)
            continue
        base = ModelJob(model_key(j.dataset, j.model, none, j.seed), j.dataset, j.model, none,
                        j.seed, j.gallery)
        first.setdefault(base.key, base)
        second[j.key] = (j, base.key)
    errors: dict[str, str] = {}
    phases = ([(j, None) for j in first.values()], list(second.values()))
    for phase in phases:
        for j, base_key in phase:
            if base_key is not None and base_key in errors:
                errors[j.key] = f"base model failed: {errors[base_key]}"
        args = [(j, b, ctx) for j, b in phase
                if not is_trained(ctx, j.key) and j.key not in errors]
        labels[:] = [f"train {a[0].label}" for a in args]
        for i, res in ex.imap(train_task, args):
            _name(bar, labels[i])
            if res["status"] == "ok":
                summary.models_trained += 1
            else:
                errors[res["key"]] = res["error"]
    summary.model_errors = dict(errors)
    return errors


def _galleries(ex: Any, cells: list[Cell], ctx: Context, out_dir: Path,
               labels: list[str]) -> None:
    # A detector's classifier is the undefended model: its gallery would be a duplicate.
    jobs = [j for j in model_jobs(cells) if j.gallery > 0 and not is_wrapper(j.defense)
            and is_ready(ctx, j) and not artifacts.deepfool_path(out_dir, j).exists()]
    labels[:] = [f"gallery {j.label}" for j in jobs]
    for i, res in ex.imap(gallery_task, [(j, ctx) for j in jobs]):
        if res["status"] == "ok":
            artifacts.write_deepfool(out_dir, jobs[i], res["tensors"], res["meta"])


def _run_cells(ex: Any, todo: list[tuple[Cell, tuple[float, ...]]], failed: dict[str, str],
               ctx: Context, writer: ResultsWriter, out_dir: Path, summary: SweepSummary,
               labels: list[str], bar: Any, evidence: Evidence) -> None:
    """Run the cells in two waves: PGD cells last, so their masking flags see the FGSM and
    noise rows of the same model whatever the executor's completion order."""
    runnable = []
    for cell, eps in todo:
        err = failed.get(cell.job.key)
        if err is None:
            runnable.append((cell, eps))
            continue
        rows = [{"eps": e, "status": "error", "error": f"training failed: {err}"} for e in eps]
        _record(writer, cell, [artifacts.identify(cell, r) for r in rows], summary, bar,
                evidence)
    for wave in ([t for t in runnable if not is_checked(t[0])],
                 [t for t in runnable if is_checked(t[0])]):
        pending = {c.cell_id: Pending.start(c, eps, ctx, out_dir)
                   for c, eps in wave if is_sharded(c)}
        tasks: list[tuple[Cell, tuple[float, ...], Context, tuple[int, int] | None]] = [
            (c, eps, ctx, None) for c, eps in wave if c.cell_id not in pending]
        tasks += [(p.cell, p.eps, ctx, s) for p in pending.values() for s in p.todo()]
        labels[:] = [c.label + (f" [{s[0]}:{s[1]}]" if s else "") for c, _, _, s in tasks]

        def finish(cell: Cell, full: list[dict[str, Any]]) -> None:
            rows = [artifacts.identify(cell, r) for r in full]
            _record(writer, cell, evidence.flag(cell, rows) if is_checked(cell) else rows,
                    summary, bar, evidence)

        for p in [p for p in pending.values() if not p.todo()]:  # finished before a kill
            finish(p.cell, p.rows(ctx))
        for i, res in ex.imap(wave_task, tasks):
            cell, eps, _, span = tasks[i]
            if span is None:
                for art in res["artifacts"]:
                    artifacts.write_cell_artifact(out_dir, cell, art)
                finish(cell, res["rows"])
            elif cell.cell_id in pending and "error" in res:
                del pending[cell.cell_id]
                finish(cell, [{"eps": e, "status": "error", "error": res["error"]} for e in eps])
            elif cell.cell_id in pending and pending[cell.cell_id].add(res):
                finish(cell, pending.pop(cell.cell_id).rows(ctx))


def _record(writer: ResultsWriter, cell: Cell, full: list[dict], summary: SweepSummary,
            bar: Any, evidence: Evidence) -> None:
    """Append a cell's complete rows (one write + fsync) and count them."""
    writer.append(full)
    for r in full:
        evidence.add(r)
    summary.run += 1
    summary.rows += len(full)
    summary.errors += any(r.get("status") == "error" for r in full)
    if bar is not None:
        bar.set_postfix_str(cell.label, refresh=False)
        bar.update(1)


def _bar(total: int, progress: bool) -> Any:
    if not progress:
        return None
    from robustkit.progress import bar

    # A bar on a terminal; elsewhere a status line every few seconds.
    return bar(total, "sweep", "cells")


def _name(bar: Any, label: str) -> None:
    if bar is not None:
        bar.set_postfix_str(label)


def _report(out_dir: Path, summary: SweepSummary) -> None:
    try:
        from robustkit import report as report_mod
    except ImportError:
        return
    build: Callable[[Path], Any] | None = getattr(report_mod, "build", None)
    if build is None:
        return
    try:
        summary.report = str(build(out_dir))
    except Exception as exc:  # noqa: BLE001 - results are safe; say why the page is missing
        summary.report_error = f"{type(exc).__name__}: {exc}"
