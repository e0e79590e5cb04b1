"""A real Dask cluster on the loopback for the benchmarks: ``dask scheduler`` and ``dask
worker --nworkers 2 --nthreads 1`` as separate processes (what a user starts by hand)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from robustkit.executors import DaskExecutor

BIN = Path(sys.executable).parent


class DaskCluster:
    """Starts the scheduler on ``port`` and two single-threaded workers, and waits for them.

    ``profile=False`` turns off distributed's statistical profiler on the workers; ``env``
    adds environment variables to the scheduler and workers (e.g. Dask config overrides).
    ``procs`` are the scheduler and worker processes (for CPU accounting).
    """

    def __init__(self, port: int = 8797, *, profile: bool = True,
                 env: dict[str, str] | None = None) -> None:
        from distributed import Client

        self.address = f"tcp://127.0.0.1:{port}"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **(env or {})}
        if not profile:
            env["DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED"] = "False"
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
        self.procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1",
                                        "--port", str(port), "--no-dashboard"], **quiet)]
        time.sleep(3)
        self.procs.append(subprocess.Popen([str(BIN / "dask"), "worker", self.address,
                                            "--nworkers", "2", "--nthreads", "1",
                                            "--no-dashboard"], **quiet))
        with Client(self.address, timeout=60, set_as_default=False) as c:
            c.wait_for_workers(2, timeout=120)

    def executor(self) -> DaskExecutor:
        """robustkit's executor on this cluster, through a client of its own."""
        from distributed import Client

        from robustkit.executors import DaskExecutor

        client = Client(self.address, timeout=60, set_as_default=False)
        client.wait_for_workers(2, timeout=120)
        return DaskExecutor(client)

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the scheduler, nannies and workers so far."""
        return tree_cpu([psutil.Process(p.pid) for p in self.procs])

    def close(self) -> None:
        for p in reversed(self.procs):
            p.send_signal(signal.SIGINT)
        for p in reversed(self.procs):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def tree_cpu(procs: list[psutil.Process]) -> float:
    """User + system CPU seconds of ``procs`` and their live descendants, each process
    once (the Dask processes are this process's descendants too)."""
    seen = {q.pid: q for p in procs for q in [p, *p.children(recursive=True)]}
    total = 0.0
    for q in seen.values():
        try:
            t = q.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            continue
    return total
