"""Large sweep cells split into shards of test samples (``shard = N`` in a ``[[datasets]]``
entry), the same mechanism as ``evaluate(..., workers=...)``: each shard is one task on the
sweep's executor, its per-sample records are written to
``<out>/samples/<cell_id>/part-<start>-<stop>.parquet`` as it finishes, and the cell's rows
are computed from them once all are there, so a killed sweep keeps its finished shards
and a rerun runs only the others. Cells of a defended system, of a streamed dataset, of a
universal attack (fitted once per cell) or that also certify run whole.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustkit.attacks import get
from robustkit.evaluate.samples import read_parts, rows_from, shard_frame, write_part, write_table
from robustkit.evaluate.shards import ShardJob, check_folder, plan, shard_task
from robustkit.sweep.cells import Cell, is_wrapper
from robustkit.sweep.evaluation import train_facts
from robustkit.sweep.jobdata import Context, job_model, test_data

Span = tuple[int, int]
BATCH = 1024  # evaluate's default batch size (a shard is at most one batch of it)


def is_sharded(cell: Cell) -> bool:
    ds = cell.job.dataset
    return bool(ds.shard) and not ds.stream and not is_wrapper(cell.job.defense) \
        and get(cell.attack.attack).kind != "universal" and not cell.certify


def spans(cell: Cell, ctx: Context) -> list[Span]:
    """The cell's shards [start, stop) of its test samples."""
    n = len(test_data(cell.job, ctx).y)
    size = int(cell.job.dataset.shard or n)
    return plan(n, size, min(BATCH, size))


def shard_cell_task(cell: Cell, eps: tuple[float, ...], ctx: Context, span: Span
                    ) -> dict[str, Any]:
    """Evaluate the test samples ``span`` of ``cell``: their per-sample records."""
    model, _ = job_model(ctx, cell.job)
    te = test_data(cell.job, ctx)
    a, b = span
    job = ShardJob(model, cell.attack.attack, tuple(eps), dict(cell.attack.params),
                   cell.job.seed, min(BATCH, b - a), ctx.device, ctx.threads)
    res = shard_task(job, (te.x[a:b], te.y[a:b]), a, b)
    frame = shard_frame(cell.attack.attack, a, res.y, res.clean, list(eps), res.outcomes)
    return {"cell_id": cell.cell_id, "span": span, "frame": frame,
            "seconds": [o.seconds for o in res.outcomes]}


@dataclass
class Pending:
    """A sharded cell while its shards come in."""

    cell: Cell
    eps: tuple[float, ...]
    spans: list[Span]
    folder: Path
    parts: dict[Span, tuple[Any, list[float]]] = field(default_factory=dict)

    @classmethod
    def start(cls, cell: Cell, eps: tuple[float, ...], ctx: Context, out_dir: Path
              ) -> Pending:
        """The cell's folder checked (or started), with the shards finished there."""
        all_spans = spans(cell, ctx)
        folder = out_dir / "samples" / cell.cell_id
        expected = {"cell_id": cell.cell_id, "eps": list(eps),
                    "shards": [list(s) for s in all_spans]}
        try:
            check_folder(folder, expected)
        except ValueError:  # shards of other eps or sizes: a cache only, start over
            shutil.rmtree(folder)
            check_folder(folder, expected)
        done = {k: v for k, v in read_parts(folder).items() if k in set(all_spans)}
        return cls(cell, eps, all_spans, folder, done)

    def todo(self) -> list[Span]:
        return [s for s in self.spans if s not in self.parts]

    def add(self, res: dict[str, Any]) -> bool:
        """Keep (and write) one finished shard; True when the cell is complete."""
        a, b = res["span"]
        write_part(self.folder, a, b, res["frame"], res["seconds"])
        self.parts[(a, b)] = (res["frame"], res["seconds"])
        return not self.todo()

    def rows(self, ctx: Context) -> list[dict[str, Any]]:
        """The cell's rows from its per-sample records (also written as samples.parquet)."""
        import pandas as pd

        frame = pd.concat([f for f, _ in self.parts.values()], ignore_index=True)
        frame = frame.sort_values(["eps", "sample"], kind="stable", ignore_index=True)
        write_table(self.folder / "samples.parquet", frame)
        seconds = [sum(sec[i] for _, sec in self.parts.values()) for i in range(len(self.eps))]
        rows = rows_from(frame, self.cell.attack.attack, list(self.eps), seconds, ctx.device)
        facts = train_facts(self.cell, job_model(ctx, self.cell.job)[1], ctx)
        return [{**r, **facts, "eps": e} for r, e in zip(rows, self.eps)]
