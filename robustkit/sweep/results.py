"""The append-only ``results.csv``: crash-safe appends and which rows are already done.

Every record is exactly one physical line (text values never contain a newline), and the
rows of a cell are appended with a single ``write`` followed by ``fsync``. A run killed
mid-write can leave at most a partial last line; :func:`repair` cuts it off before the
next run appends. A row is identified by ``(cell_id, eps)``.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, final

# Identifiers first, then the evaluation columns (robustkit.evaluate), then defense scores.
ID_COLUMNS = ("cell_id", "spec", "dataset", "model", "family", "model_params", "defense",
              "defense_method", "defense_params", "attack", "attack_method", "attack_params",
              "adaptive", "eps", "seed", "model_key", "status", "error")
EVAL_COLUMNS = ("n", "clean_accuracy", "robust_accuracy", "success_rate", "fooling_rate",
                "misclassification_rate", "l2_mean", "l2_median", "linf_mean", "linf_median",
                "seconds", "samples_per_second", "device")
DEFENSE_COLUMNS = ("train_seconds", "train_ratio", "test_accuracy", "detection_auc",
                   "tpr_at_5fpr", "system_accuracy", "clean_system_accuracy",
                   "rejection_rate", "masking_flags")
COLUMNS = ID_COLUMNS + EVAL_COLUMNS + DEFENSE_COLUMNS + ("extra",)
# Columns that legitimately differ between two runs of the same cell.
TIMING_COLUMNS = ("seconds", "samples_per_second", "train_seconds", "train_ratio")


def eps_key(eps: Any) -> str:
    """The canonical text of an eps value (``0.1``, ``0.0``), as written in the CSV."""
    return repr(float(eps))


def repair(path: str | Path) -> int:
    """Cut a partial last line (left by a killed run) off ``path``; return bytes removed."""
    p = Path(path)
    if not p.exists():
        return 0
    size = p.stat().st_size
    if size == 0:
        return 0
    with open(p, "rb+") as f:
        f.seek(max(0, size - 1))
        if f.read(1) == b"\n":
            return 0
        data_end = _last_newline_end(f, size)
        f.truncate(data_end)
        f.flush()
        os.fsync(f.fileno())
    return size - data_end


def _last_newline_end(f: Any, size: int, chunk: int = 65536) -> int:
    pos = size
    while pos > 0:
        start = max(0, pos - chunk)
        f.seek(start)
        buf = f.read(pos - start)
        i = buf.rfind(b"\n")
        if i >= 0:
            return start + i + 1
        pos = start
    return 0


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """The complete rows of a results file (a partial last line is ignored), as strings."""
    p = Path(path)
    if not p.exists():
        return []
    data = p.read_bytes()
    data = data[: data.rfind(b"\n") + 1]
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))


def done_keys(rows: Iterable[Mapping[str, str]], *, errors: bool = True) -> set[tuple[str, str]]:
    """``(cell_id, eps)`` of finished rows (rows with status ``error`` only if ``errors``)."""
    return {(r["cell_id"], r["eps"]) for r in rows
            if errors or r.get("status") != "error"}


@final
class ResultsWriter:
    """Appends rows to a results CSV, one ``write`` + ``fsync`` per batch of rows.

    Opening repairs a partial last line and writes the header into an empty file; a file
    whose header differs from ``COLUMNS`` is refused (write to a new folder instead).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "results.csv"
        >>> with ResultsWriter(p) as w:
        ...     w.append([{"cell_id": "abc", "eps": 0.1, "status": "ok"}])
        >>> read_rows(p)[0]["eps"]
        '0.1'
    """

    def __init__(self, path: str | Path, columns: tuple[str, ...] = COLUMNS) -> None:
        self.path = Path(path)
        self.columns = columns
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair(self.path)
        header = self._header()
        if header is not None and tuple(header) != columns:
            raise ValueError(f"{self.path} has columns {header[:4]}...; expected this "
                             f"version's {len(columns)} columns; write to another --out")
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if header is None:
            self._write(self._encode([dict(zip(columns, columns))]))

    def _header(self) -> list[str] | None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return None
        with open(self.path, newline="", encoding="utf-8") as f:
            return next(csv.reader(f), None)

    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append ``rows`` (missing columns empty, unknown keys into ``extra`` as JSON)."""
        if rows:
            self._write(self._encode(rows))

    def _encode(self, rows: Sequence[Mapping[str, Any]]) -> bytes:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        for row in rows:
            extra = {k: v for k, v in row.items() if k not in self.columns}
            if extra and "extra" in self.columns:
                row = {**row, "extra": json.dumps(extra, sort_keys=True, default=str)}
            w.writerow([_cell(row.get(c)) for c in self.columns])
        return buf.getvalue().encode("utf-8")

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:  # one call in practice; loop in case the OS writes less
            n = os.write(self._fd, view)
            view = view[n:]
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def exclusive(out_dir: str | Path) -> Iterator[None]:
    """Hold ``<out_dir>/.lock`` for the block: a second sweep on the same folder is refused
    (two writers would both run the unfinished cells). POSIX only; elsewhere a no-op."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    path = Path(out_dir) / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another sweep is writing to {Path(out_dir)} (it holds "
                               f"{path}); wait for it or use another --out") from None
        yield
    finally:
        os.close(fd)  # closing releases the lock


def rewrite_without(path: str | Path, drop: set[tuple[str, str]]) -> int:
    """Atomically rewrite ``path`` without the rows whose ``(cell_id, eps)`` is in ``drop``."""
    p = Path(path)
    rows = read_rows(p)
    keep = [r for r in rows if (r["cell_id"], r["eps"]) not in drop]
    if len(keep) == len(rows):
        return 0
    with open(p, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=header, lineterminator="\n")
        w.writeheader()
        w.writerows(keep)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)
    return len(rows) - len(keep)


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    if isinstance(v, (dict, list, tuple)):
        v = json.dumps(v, sort_keys=True, default=str)
    # One record per physical line: repair() and resuming rely on it.
    return str(v).replace("\r", " ").replace("\n", " | ")
