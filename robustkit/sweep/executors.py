"""Where tasks run: in this process, in N local processes, or on a Dask cluster.

All three expose one method, ``imap(fn, argtuples)``, yielding ``(index, result)`` as
tasks finish. Task functions report their own failures in their result; an exception
that reaches here means the executor itself broke (a worker process died), and is raised.
Arguments and results cross process boundaries pickled by multiprocessing or Dask, as
those libraries do; nothing pickled is ever read from a file.
"""
from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from robustkit.sweep.dask_address import check_dask_address

Task = Callable[..., Any]


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

    def close(self) -> None:
        pass


class ProcessExecutor:
    """Runs tasks in ``workers`` local processes (``spawn`` context: safe with torch threads).

    At most ``2 * workers`` tasks are queued at a time, so a killed sweep loses only the
    cells in flight and results stream back in submission order as far as possible.
    """

    name = "processes"

    def __init__(self, workers: int, *, threads: int | None = None) -> None:
        from robustkit.sweep.tasks import init_worker

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

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


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
            self.client, self._own = Client(address, set_as_default=False), True
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

    def close(self) -> None:
        if self._own:
            self.client.close()


def make_executor(*, workers: int = 0, dask: Any = None, threads: int | None = None,
                  before: Callable[[int], None] | None = None) -> Any:
    """The executor for ``--workers N`` (N > 1: processes) or ``--dask ADDRESS``.

    Example:
        >>> make_executor().name
        'serial'
    """
    if dask is not None and workers > 1:
        raise ValueError("give either workers > 1 or a dask address, not both")
    if dask is not None:
        return DaskExecutor(check_dask_address(dask))
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if workers > 1:
        return ProcessExecutor(workers, threads=threads)
    return SerialExecutor(before)
