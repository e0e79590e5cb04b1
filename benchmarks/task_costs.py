"""Per-task costs inside whatever process runs a task (for benchmarks/dask_costs.py).

:class:`Measured` wraps an executor: every task runs through :func:`measured`, which notes,
in the process that runs it, the task's wall and thread CPU seconds, the process's CPU
(user, system) and minor page faults before and after, the torch intra-op threads the task
saw, its thread's name and the malloc and OpenMP environment. The driver then compares
the CPU inside tasks with each worker process's CPU over the same span.
"""
from __future__ import annotations

import os
import pickle
import resource
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch


def _usage() -> dict[str, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    t = resource.getrusage(resource.RUSAGE_THREAD)
    return {"user": r.ru_utime, "sys": r.ru_stime, "minflt": r.ru_minflt,
            "thread_minflt": t.ru_minflt, "thread_nivcsw": t.ru_nivcsw}


def measured(fn: Callable[..., Any], *args: Any) -> tuple[Any, dict[str, Any]]:
    """``fn(*args)`` and what it cost in this process."""
    before, w0, c0 = _usage(), time.perf_counter(), time.thread_time()
    threads_seen = torch.get_num_threads()
    out = fn(*args)
    after = _usage()
    return out, {"pid": os.getpid(), "thread": threading.current_thread().name,
                 "main_thread": threading.current_thread() is threading.main_thread(),
                 "torch_threads_at_start": threads_seen,
                 "torch_threads": torch.get_num_threads(),
                 "wall": time.perf_counter() - w0, "thread_cpu": time.thread_time() - c0,
                 "before": before, "after": after,
                 "MALLOC_TRIM_THRESHOLD_": os.environ.get("MALLOC_TRIM_THRESHOLD_"),
                 "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}


class Measured:
    """An executor that runs every task through :func:`measured` on ``inner``;
    ``task_bytes`` are the pickled arguments of each task, but the first where ``shared``
    (a job passed through ``share()``: a future on Dask)."""

    def __init__(self, inner: Any, *, shared: bool = True) -> None:
        self.inner, self.name, self.workers = inner, inner.name, inner.workers
        self.skip = 1 if shared else 0
        self.stats: list[dict[str, Any]] = []
        self.task_bytes: list[int] = []

    def share(self, obj: Any) -> Any:
        return self.inner.share(obj)

    def imap(self, fn: Callable[..., Any], args: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
        self.task_bytes += [len(pickle.dumps(a[self.skip:])) for a in args]
        for i, (out, stats) in self.inner.imap(measured, [(fn, *a) for a in args]):
            self.stats.append(stats)
            yield i, out

    def close(self) -> None:
        self.inner.close()

    def summary(self) -> dict[str, Any]:
        """Sums over tasks, and per worker process its CPU from its first task's start to
        its last task's end (what the process spent beyond the tasks shows there)."""
        by_pid: dict[int, list[dict[str, Any]]] = {}
        for s in self.stats:
            by_pid.setdefault(s["pid"], []).append(s)
        span_cpu = span_sys = span_flt = 0.0
        for runs in by_pid.values():
            first = min(runs, key=lambda s: s["before"]["user"] + s["before"]["sys"])
            last = max(runs, key=lambda s: s["after"]["user"] + s["after"]["sys"])
            span_cpu += sum(last["after"][k] - first["before"][k] for k in ("user", "sys"))
            span_sys += last["after"]["sys"] - first["before"]["sys"]
            span_flt += last["after"]["minflt"] - first["before"]["minflt"]
        s0 = self.stats[0]
        return {"tasks": len(self.stats), "worker_processes": len(by_pid),
                "task_wall": sum(s["wall"] for s in self.stats),
                "task_thread_cpu": sum(s["thread_cpu"] for s in self.stats),
                "worker_cpu": span_cpu, "worker_sys": span_sys, "worker_minflt": span_flt,
                "task_thread_minflt": sum(s["after"]["thread_minflt"] -
                                          s["before"]["thread_minflt"] for s in self.stats),
                "bytes_per_task": max(self.task_bytes) if self.task_bytes else 0,
                "bytes_all_tasks": sum(self.task_bytes),
                "task_thread": s0["thread"], "main_thread": s0["main_thread"],
                "torch_threads_at_start": s0["torch_threads_at_start"],
                "torch_threads": s0["torch_threads"],
                "malloc_trim_threshold": s0["MALLOC_TRIM_THRESHOLD_"],
                "omp_num_threads": s0["OMP_NUM_THREADS"]}
