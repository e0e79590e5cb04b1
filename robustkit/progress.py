"""Progress of long work on stderr: a tqdm bar on a terminal, status lines elsewhere.

A progress bar is silent when stderr is not a terminal (a log file, CI, ``| tee``), and a
100-second attack call moves no bar at all. Where stderr is not a terminal, a
:class:`Ticker` prints one line every ``$ROBUSTKIT_PROGRESS_SECONDS`` seconds (default 10)
from a background thread (what runs, how much is done, the time so far) so that long work
is never silent, also in the middle of a single long call. Nothing here goes to stdout.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, TypeVar

ENV = "ROBUSTKIT_PROGRESS_SECONDS"
DEFAULT_SECONDS = 10.0
MIN_SECONDS, MAX_SECONDS = 0.01, 365 * 86400.0  # beyond: a busy loop, or a wait that overflows
T = TypeVar("T")


def interval() -> float:
    """Seconds between two status lines: ``$ROBUSTKIT_PROGRESS_SECONDS`` (a number from
    0.01 to a year), else 10."""
    try:
        value = float(os.environ.get(ENV, ""))
    except ValueError:
        return DEFAULT_SECONDS
    return value if MIN_SECONDS <= value <= MAX_SECONDS else DEFAULT_SECONDS


def is_terminal(stream: IO[str] | None = None) -> bool:
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Ticker:
    """A status line on stderr every :func:`interval` seconds while work runs.

    Has the part of tqdm's interface robustkit uses (``update``, ``set_postfix_str``,
    ``set_postfix``, ``close``, iteration), so it stands in for a bar.

    Example:
        >>> t = Ticker("attack pgd", total=100, unit="samples")
        >>> t.update(50)
        >>> t.line()
        'attack pgd: 50/100 samples, 0 s'
        >>> t.close()
    """

    def __init__(self, desc: str, *, total: int | None = None, unit: str = "",
                 iterable: Iterable[Any] | None = None, file: IO[str] | None = None) -> None:
        self.desc, self.total, self.unit, self.n = desc, total, unit, 0
        self.status = ""
        self._iterable = iterable
        self._file = file
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="robustkit-progress",
                                        daemon=True)
        self._thread.start()

    def line(self) -> str:
        """The status line as it would be printed now."""
        parts = [f"{self.desc}:"]
        if self.total is not None:
            parts.append(f"{self.n}/{self.total} {self.unit}".rstrip() + ",")
        elif self.n:
            parts.append(f"{self.n} {self.unit}".rstrip() + ",")
        if self.status:
            parts.append(f"{self.status},")
        parts.append(f"{time.monotonic() - self._t0:.0f} s")
        return " ".join(parts)

    def _run(self) -> None:
        every = interval()
        while not self._stop.wait(every):
            stream = self._file if self._file is not None else sys.stderr
            try:
                print(self.line(), file=stream, flush=True)
            except (OSError, ValueError):  # stderr closed under us: stay quiet
                return

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.status = s

    def set_postfix(self, **kw: Any) -> None:
        self.status = ", ".join(f"{k}={v}" for k, v in kw.items())

    def close(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def __iter__(self) -> Iterator[Any]:
        try:
            for item in self._iterable or ():
                yield item
                self.update(1)
        finally:
            self.close()


_OPEN: list[Any] = []  # bars made by bar(), innermost last


def status(text: str) -> None:
    """Show ``text`` as the status of the innermost open :func:`bar` (no-op without one).

    Long attacks call it between their stages (e.g. AutoAttack: which attack, which eps),
    so a single long call still says what it is doing.

    Example:
        >>> status("apgd_ce on 100 samples")  # no bar open: nothing happens
    """
    if _OPEN:
        _OPEN[-1].set_postfix_str(text)


class _Closing:
    """Mixin: a bar that leaves the open list when closed."""

    def close(self) -> None:
        # by identity (tqdm compares bars by position); _OPEN is None at interpreter exit
        if _OPEN:
            _OPEN[:] = [b for b in _OPEN if b is not self]
        super().close()  # type: ignore[misc]


class _Ticker(_Closing, Ticker):
    pass


def bar(total: int | None, desc: str, unit: str, *, leave: bool = True) -> Any:
    """A tqdm bar on a terminal, a :class:`Ticker` elsewhere (both on stderr); while open it
    shows what :func:`status` reports."""
    if not is_terminal():
        made: Any = _Ticker(desc, total=total, unit=unit)
    else:
        from tqdm.auto import tqdm

        made = type("_Bar", (_Closing, tqdm), {})(total=total, desc=desc, unit=unit,
                                                  leave=leave, file=sys.stderr)
    _OPEN.append(made)
    return made


def iterate(items: list[T], desc: str, unit: str) -> Iterable[T]:
    """Iterate over ``items`` with :func:`bar`'s progress display."""
    if not is_terminal():
        return Ticker(desc, total=len(items), unit=unit, iterable=items)
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit=unit, leave=False, file=sys.stderr)
