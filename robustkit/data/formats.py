"""Small, strict parsers for the dataset file formats robustkit reads: IDX and CIFAR binary.

Both formats are plain bytes, so reading them executes nothing. Every header field is
checked against the file's real length before anything is allocated, and a truncated,
padded or foreign file is a ``ValueError`` naming the file. CIFAR-10's *python* batches
are pickles and are deliberately not supported.
"""
from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

IDX_UBYTE = 0x08  # the only IDX element type MNIST-style sets use
MAX_IDX_BYTES = 1 << 31  # refuse headers that claim more than 2 GiB of pixels
CIFAR_RECORD = 1 + 3 * 32 * 32  # one label byte, then 1024 red, 1024 green, 1024 blue


def read_idx(path: str | os.PathLike, *, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file of unsigned bytes (``.gz`` or extracted) into a uint8 array.

    Args:
        path: an IDX file such as ``train-images-idx3-ubyte`` or ``...-idx1-ubyte.gz``.
        ndim: if given, the number of dimensions the file must declare (3 for images,
            1 for labels).

    Returns:
        A writable uint8 array shaped as the header declares, e.g. (60000, 28, 28).

    Raises:
        ValueError: bad magic number, element type or dimensions, or a data section that
            is shorter (truncated) or longer than the header declares; also for a corrupt
            gzip stream.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "labels-idx1-ubyte"
        >>> _ = p.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 2, 7, 3]))
        >>> read_idx(p, ndim=1).tolist()
        [7, 3]
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            return _read_idx_stream(f, path, ndim)  # type: ignore[arg-type]
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ValueError(f"{path}: corrupt or truncated gzip data ({exc})") from None


def _read_idx_stream(f: BinaryIO, path: Path, ndim: int | None) -> np.ndarray:
    head = f.read(4)
    if len(head) < 4 or head[0] != 0 or head[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number {head.hex() or 'empty'})")
    code, nd = head[2], head[3]
    if code != IDX_UBYTE:
        raise ValueError(f"{path}: IDX element type 0x{code:02x} is not supported "
                         f"(only unsigned bytes, 0x08)")
    if nd == 0 or (ndim is not None and nd != ndim):
        raise ValueError(f"{path}: IDX file declares {nd} dimensions, expected {ndim}")
    raw = f.read(4 * nd)
    if len(raw) < 4 * nd:
        raise ValueError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{nd}I", raw)
    n = math.prod(dims)
    if n == 0 or n > MAX_IDX_BYTES:
        raise ValueError(f"{path}: implausible IDX dimensions {dims}")
    out = np.empty(n, dtype=np.uint8)
    view, got = out.data, 0
    while got < n:
        k = f.readinto(view[got:])  # type: ignore[attr-defined]
        if not k:
            raise ValueError(f"{path}: truncated IDX data: {got} of {n} bytes for "
                             f"dimensions {dims}")
        got += k
    if f.read(1):
        raise ValueError(f"{path}: IDX file is longer than its dimensions {dims} declare")
    return out.reshape(dims)


def read_cifar_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 *binary* batch (``data_batch_1.bin``, ``test_batch.bin``...).

    Each record is 3073 bytes: the label (0-9), then the 32x32 red, green and blue planes.

    Args:
        path: a ``.bin`` batch from ``cifar-10-binary.tar.gz``.

    Returns:
        ``(x, y)``: x uint8 (N, 3, 32, 32), y uint8 (N,).

    Raises:
        ValueError: an empty file, a size that is not a whole number of records
            (truncated), or a label outside 0-9 (not a CIFAR-10 batch).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "test_batch.bin"
        >>> _ = p.write_bytes(bytes([3]) + bytes(3072))
        >>> x, y = read_cifar_batch(p)
        >>> x.shape, y.tolist()
        ((1, 3, 32, 32), [3])
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0 or size % CIFAR_RECORD:
        raise ValueError(f"{path}: size {size} bytes is not a whole number of "
                         f"{CIFAR_RECORD}-byte CIFAR-10 records (truncated or not a "
                         f"binary batch)")
    rec = np.fromfile(path, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    y = rec[:, 0].copy()
    if int(y.max()) > 9:
        raise ValueError(f"{path}: label {int(y.max())} outside 0-9; not a CIFAR-10 "
                         f"binary batch")
    x = np.ascontiguousarray(rec[:, 1:]).reshape(-1, 3, 32, 32)
    return x, y
