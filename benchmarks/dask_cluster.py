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
        _wait_for_port(port, self.procs[0])
        self.procs.append(subprocess.Popen([str(BIN / "dask"), "worker", self.address,
                                            "--nworkers", "2", "--nthreads", "1",
                                            "--no-dashboard"], **quiet))
        with Client(self.address, timeout=120, set_as_default=False) as c:
            c.wait_for_workers(2, timeout=300)

    def executor(self) -> DaskExecutor:
        """robustkit's executor on this cluster, through a client of its own."""
        from distributed import Client

        from robustkit.executors import DaskExecutor

        client = Client(self.address, timeout=120, set_as_default=False)
        client.wait_for_workers(2, timeout=300)
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


def _wait_for_port(port: int, proc: subprocess.Popen, deadline: float = 300.0) -> None:
    """Until the scheduler accepts connections (its start-up is slow on a loaded machine);
    RuntimeError if it exits first (the port taken?) or the deadline passes."""
    import socket

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dask scheduler exited with {proc.returncode} (port {port} "
                               f"taken?)")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise RuntimeError(f"dask scheduler did not listen on port {port} in {deadline:.0f} s")


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
