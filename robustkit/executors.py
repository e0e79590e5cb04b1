"""Where tasks run: in this process, in N local processes, one process per device, or on a
Dask cluster (sweep cells, evaluation shards).

All expose ``imap(fn, argtuples)``, yielding ``(index, result)`` as tasks finish, and
``share(obj)``: what to pass instead of an argument every task gets (on Dask, the object
is sent to every worker once instead of with every task). Task functions report their own failures in their result; an exception
that reaches here means the executor itself broke (a worker process died), and is raised.
Arguments and results cross process boundaries pickled by multiprocessing or Dask, as
those libraries do; nothing pickled is ever read from a file. Task functions call
:func:`prepare_process` first (threads, and the malloc setting Dask's nanny makes).
"""
from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

import torch

from robustkit.dask_address import check_dask_address

Task = Callable[..., Any]


# glibc mallopt parameters, and the values its dynamic mmap threshold grows up to on 64-bit
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_MAX, TRIM_MAX = 32 << 20, 64 << 20
_prepared: list[bool] = []  # once per process


def init_worker(threads: int) -> None:
    """Process-pool initializer: set the thread count; on Linux, die with the parent (a
    run killed with SIGKILL must not leave its workers running)."""
    prepare_process(max(1, threads))
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # not glibc-like: workers exit on their own
            return


def prepare_process(threads: int | None) -> None:
    """Get the process that runs a task ready for torch: ``threads`` intra-op threads (None:
    as they are), set in the calling thread (a Dask worker runs tasks in a thread of its
    own); and, once per process, undo ``MALLOC_TRIM_THRESHOLD_`` where it is set.

    Why the malloc part: Dask's nanny starts every worker with
    ``MALLOC_TRIM_THRESHOLD_=65536``, and glibc then stops raising its mmap threshold, so
    every tensor over 128 KiB is a fresh mmap that is zero-filled page by page and
    unmapped when freed (measured: 13x the page faults and 20-45% more CPU for an MNIST CNN
    under AutoAttack). The thresholds are set to where glibc's own dynamic threshold stops
    (32 MiB mmap, 64 MiB trim), so a worker keeps at most that much freed memory.
    """
    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if _prepared:
        return
    _prepared.append(True)
    if os.environ.get("MALLOC_TRIM_THRESHOLD_") and sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None)
            libc.mallopt(M_MMAP_THRESHOLD, MMAP_MAX)
            libc.mallopt(M_TRIM_THRESHOLD, TRIM_MAX)
        except (OSError, AttributeError):  # not glibc: nothing to undo
            return


class SerialExecutor:
    """Runs tasks one after the other in this process (``before`` sees each one first)."""

    name = "serial"
    workers = 1

    def __init__(self, before: Callable[[int], None] | None = None) -> None:
        self.before = before

    def imap(self, fn: Task, args: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
        for i, a in enumerate(args):
            if self.before is not None:
                self.before(i)
            yield i, fn(*a)

    def share(self, obj: Any) -> Any:
        return obj

    def close(self) -> None:
        pass


class ProcessExecutor:
    """Runs tasks in ``workers`` local processes (``spawn`` context: safe with torch threads).

    At most ``2 * workers`` tasks are queued at a time, so a killed sweep loses only the
    cells in flight and results stream back in submission order as far as possible.
    """

    name = "processes"

    def __init__(self, workers: int, *, threads: int | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        threads = threads or 1
        self._pool = ProcessPoolExecutor(max_workers=workers,
                                         mp_context=multiprocessing.get_context("spawn"),
                                         initializer=init_worker, initargs=(threads,))

    def imap(self, fn: Task, args: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
        pending: dict[Future, int] = {}
        queue = iter(enumerate(args))
        for i, a in queue:
            pending[self._pool.submit(fn, *a)] = i
            if len(pending) >= 2 * self.workers:
                break
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in sorted(done, key=pending.__getitem__):
                i = pending.pop(fut)
                for j, a in queue:
                    pending[self._pool.submit(fn, *a)] = j
                    break
                yield i, fut.result()

    def share(self, obj: Any) -> Any:
        return obj

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class DeviceExecutor:
    """One local process per device (``"cuda:0"``, ``"cuda:1"``...); a task runs as
    ``fn(*args, device)`` in the process of the device with the fewest tasks queued."""

    name = "devices"

    def __init__(self, devices: Sequence[str], *, threads: int | None = None) -> None:
        if not devices:
            raise ValueError("devices must name at least one device, got none")
        self.devices = [str(d) for d in devices]
        self.workers = len(self.devices)
        ctx = multiprocessing.get_context("spawn")
        self._pools = [ProcessPoolExecutor(max_workers=1, mp_context=ctx,
                                           initializer=init_worker,
                                           initargs=(threads or 1,)) for _ in self.devices]

    def imap(self, fn: Task, args: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
        load = [0] * len(self._pools)
        pending: dict[Future, tuple[int, int]] = {}
        for i, a in enumerate(args):
            k = load.index(min(load))
            load[k] += 1
            pending[self._pools[k].submit(fn, *a, self.devices[k])] = (i, k)
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in sorted(done, key=lambda f: pending[f][0]):
                i, _k = pending.pop(fut)
                yield i, fut.result()

    def share(self, obj: Any) -> Any:
        return obj

    def close(self) -> None:
        for pool in self._pools:
            pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor:
    """Submits tasks to an existing ``dask.distributed`` cluster (or a given ``Client``).

    Workers must have robustkit installed and see the same data root and output folder
    (the model store lives there).
    """

    name = "dask"

    def __init__(self, address: Any) -> None:
        from distributed import Client

        if isinstance(address, Client):
            self.client, self._own = address, False
        else:
            self.client = Client(check_dask_address(address), set_as_default=False)
            self._own = True
        info = self.client.scheduler_info()
        self.workers = max(1, len(info.get("workers", {})))
        self.address = getattr(self.client.scheduler, "address", str(address))

    def imap(self, fn: Task, args: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
        from distributed import as_completed

        futures = {self.client.submit(fn, *a, pure=False): i for i, a in enumerate(args)}
        try:
            for fut in as_completed(futures, loop=self.client.loop):
                yield futures[fut], fut.result()
        finally:
            self.client.cancel([f for f in futures if not f.done()])

    def share(self, obj: Any) -> Any:
        """A future of ``obj`` on every worker: sent once, not pickled into every task."""
        return self.client.scatter(obj, broadcast=True, hash=False)

    def close(self) -> None:
        if self._own:
            self.client.close()


def make_executor(*, workers: int = 0, dask: Any = None, threads: int | None = None,
                  before: Callable[[int], None] | None = None,
                  devices: Sequence[str] | None = None) -> Any:
    """The executor for ``--workers N`` (N > 1: processes), ``--dask ADDRESS`` or
    ``--devices cuda:0,cuda:1`` (one process per device).

    Example:
        >>> make_executor().name
        'serial'
    """
    if sum((dask is not None, workers > 1, bool(devices))) > 1:
        raise ValueError("give one of workers > 1, a dask address or devices")
    if devices:
        return DeviceExecutor(devices, threads=threads)
    if dask is not None:
        return DaskExecutor(dask)
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if workers > 1:
        return ProcessExecutor(workers, threads=threads)
    return SerialExecutor(before)
