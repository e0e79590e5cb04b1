"""Where a sweep on Dask loses its time: the digits attack sweep serially, on 2 local worker
processes and on a real Dask scheduler with 2 single-threaded worker processes on the
loopback address, back to back, each from an empty output folder (models trained again).

Per run: wall seconds, the sweep's phases (setup, train, galleries, cells), and the CPU
seconds of every process involved (this one, its worker processes, and the Dask
scheduler, nannies and workers), so that a slower Dask run shows whether it did more work
(CPU) or waited (wall only). ``identical``: rows equal to the serial run's in every column
but the timing ones. Variants: ``dask-noprofile`` runs the workers with Dask's statistical
profiler off (``DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False``), which samples every
thread's stack every 10 ms while tasks hold the GIL.

Run:
    .venv/bin/python benchmarks/sweep_executors.py                      # 300 test images
    .venv/bin/python benchmarks/sweep_executors.py --test-limit 100 --fit-limit 100
Output: benchmarks/results/sweep_executors.csv (all rows replaced). Wall times need an
otherwise idle machine: ``load_before`` records ``os.getloadavg()`` before each run.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import torch
from attacks_common import code_version
from common import RESULTS, device_name, write_csv
from dask_cluster import DaskCluster, tree_cpu
from task_costs import Measured

from robustkit.sweep import parse_spec, run_sweep, runner
from robustkit.sweep.results import read_rows

OUT = RESULTS / "sweep_executors.csv"
SPEC = Path(__file__).resolve().parents[1] / "attacks" / "digits.toml"
BIN = Path(sys.executable).parent
COSTS = ("tasks", "task_thread_cpu", "worker_cpu", "worker_sys", "worker_minflt",
         "bytes_per_task", "bytes_all_tasks", "malloc_trim_threshold")
TIMING = ("seconds", "samples_per_second", "train_seconds", "train_ratio", "device")


@contextmanager
def measuring() -> Iterator[list[Measured]]:
    """The sweep's executor wrapped in ``task_costs.Measured`` (per-task CPU, page faults,
    bytes per task), but the serial one (its progress hook stays)."""
    made: list[Measured] = []
    original = runner.make_executor

    def wrapped(**kw: Any) -> Any:
        ex = original(**kw)
        if ex.name == "serial":
            return ex
        made.append(Measured(ex, shared=False))
        return made[-1]

    runner.make_executor = wrapped
    try:
        yield made
    finally:
        runner.make_executor = original


def run(mode: str, spec_text: str, port: int) -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(prefix=f"robustkit-sweep-{mode}-"))
    cluster = DaskCluster(port, profile=mode != "dask-noprofile") if mode.startswith("dask") \
        else None
    me = psutil.Process()
    try:
        load = os.getloadavg()[0]
        procs = [me] + ([psutil.Process(p.pid) for p in cluster.procs] if cluster else [])
        c0 = tree_cpu(procs)
        k0 = os.times().children_user + os.times().children_system
        t0 = time.perf_counter()
        with measuring() as seen:
            summary = run_sweep([parse_spec(spec_text, str(SPEC))], out, report=False,
                                workers=2 if mode == "processes" else 0,
                                dask=cluster.address if cluster else None)
        wall = time.perf_counter() - t0
        reaped = os.times().children_user + os.times().children_system - k0
        cpu = tree_cpu(procs) - c0 + reaped
    finally:
        if cluster is not None:
            cluster.close()
    rows = sorted(({k: v for k, v in r.items() if k not in TIMING}
                   for r in read_rows(out / "results.csv")),
                  key=lambda r: (r["cell_id"], float(r["eps"])))  # completion order differs
    costs = seen[0].summary() if seen and seen[0].stats else {}
    return {"mode": mode, "wall_seconds": wall, "cpu_seconds": cpu, "rows": len(rows),
            "errors": summary.errors, **{f"{k}_seconds": v for k, v in summary.phases.items()},
            **{k: costs[k] for k in COSTS if k in costs},
            "load_before": round(load, 2), "_rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--test-limit", type=int, default=300)
    ap.add_argument("--fit-limit", type=int, default=400)
    ap.add_argument("--modes", default="serial,processes,dask,dask-noprofile")
    args = ap.parse_args()
    text = SPEC.read_text()
    text = re.sub(r"test_limit = \d+", f"test_limit = {args.test_limit}", text)
    text = re.sub(r"fit_limit = \d+", f"fit_limit = {args.fit_limit}", text)
    torch.set_num_threads(1)
    common = {"benchmark": "sweep_executors", "spec": "attacks/digits.toml",
              "test_limit": args.test_limit, "fit_limit": args.fit_limit,
              "device": device_name(torch.device("cpu")), "cpus": os.cpu_count(),
              "commit": code_version()}
    results, ref = [], None
    for i, mode in enumerate(args.modes.split(",")):
        r = run(mode, text, 8790 + i)
        rows = r.pop("_rows")
        ref = rows if ref is None else ref
        r["identical"] = rows == ref
        results.append({**common, **r})
        print({k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}, flush=True)
    write_csv(results, OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
