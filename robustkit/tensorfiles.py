"""Tensor files of the store: a named group is ``<name>.safetensors`` (tensors only) plus
``<name>.json`` (what they are, with the tensor file's SHA-256), both written atomically,
tensors first. ``robustkit.store`` builds model persistence on top of this; nothing here
ever unpickles.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

FORMAT = "robustkit-store"
FORMAT_VERSION = 1
MAX_JSON_BYTES = 16 * 2**20
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class StoreError(ValueError):
    """A store file is missing, corrupt, tampered with, foreign, or does not fit its model."""


def check_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it is a safe file/directory name (letters, digits, ``._-``)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"{what} must be 1-128 letters, digits, '.', '_' or '-' (starting "
                         f"with a letter or digit), got {name!r}")
    return name


def atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder and ``os.replace``,
    so readers see the old file or the new one, never a partial one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would make files others cannot read
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_tensors(directory: str | os.PathLike, name: str, tensors: Mapping[str, torch.Tensor],
                 *, meta: Mapping[str, Any] | None = None, kind: str = "tensors") -> Path:
    """Write a named group of tensors plus JSON metadata into ``directory``.

    Args:
        directory: created if missing.
        name: group name; files ``<name>.safetensors`` and ``<name>.json``.
        tensors: name -> tensor (any device; stored from CPU copies).
        meta: JSON-serializable metadata stored with the group.
        kind: what the group is (``"tensors"``, or ``"module"`` for :func:`save`).

    Returns:
        The path of the JSON file.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> _ = save_tensors(d, "uap", {"v": torch.zeros(1, 8, 8)}, meta={"eps": 0.1})
        >>> load_tensors(d, "uap")[1]["eps"]
        0.1
    """
    from safetensors.torch import save as st_save

    check_name(name)
    # Clones break storage sharing (tied weights), which safetensors refuses to write.
    cpu = {str(k): v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    blob = st_save(cpu, metadata={"format": "pt"})
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind, "name": name,
           **dict(meta or {}),
           "tensors": {"file": f"{name}.safetensors", "sha256": hashlib.sha256(blob).hexdigest(),
                       "bytes": len(blob), "count": len(cpu)},
           "versions": versions(),
           "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    try:
        text = json.dumps(doc, indent=2, allow_nan=False, default=_jsonable)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"metadata of {name!r} is not JSON-serializable: {exc}") from None
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / f"{name}.safetensors", blob)
    return atomic_write(directory / f"{name}.json", text.encode())


def read_meta(directory: str | os.PathLike, name: str = "model", *,
              kind: str | None = None) -> dict[str, Any]:
    """Read and validate the JSON of group ``name`` without touching its tensors.

    Raises:
        StoreError: missing, oversized, not JSON, not a robustkit store file, another
            format version, or another kind than ``kind``.
    """
    path = Path(directory) / f"{check_name(name)}.json"
    if not path.is_file():
        raise StoreError(f"{path}: no such store file")
    if path.stat().st_size > MAX_JSON_BYTES:
        raise StoreError(f"{path}: larger than {MAX_JSON_BYTES} bytes; not a store file")
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path}: not a robustkit store file (not JSON: {exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise StoreError(f"{path}: not a robustkit store file (format is not {FORMAT!r})")
    if doc.get("format_version") != FORMAT_VERSION:
        raise StoreError(f"{path}: store format version {doc.get('format_version')!r} is not "
                         f"supported (this robustkit reads version {FORMAT_VERSION})")
    if kind is not None and doc.get("kind") != kind:
        raise StoreError(f"{path}: holds a {doc.get('kind')!r} group, expected {kind!r}")
    info = doc.get("tensors")
    if (not isinstance(info, dict) or info.get("file") != f"{name}.safetensors"
            or not isinstance(info.get("sha256"), str)
            or not re.fullmatch(r"[0-9a-f]{64}", info["sha256"])):
        raise StoreError(f"{path}: missing or malformed 'tensors' entry")
    return doc


_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16",
           torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32", torch.int16: "I16",
           torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}


def dtype_code(dtype: torch.dtype) -> str:
    """The safetensors header's name of a torch dtype (``torch.float32`` -> ``"F32"``)."""
    return _DTYPES.get(dtype, str(dtype))


def read_header(directory: str | os.PathLike, name: str,
                doc: Mapping[str, Any] | None = None) -> dict[str, tuple[str, list[int]]]:
    """Names, dtypes and shapes of group ``name``'s tensors, from the safetensors header
    only (the 8-byte length and the JSON after it): no tensor data is read.

    With ``doc`` (the group's JSON) the file's size is also checked against the size
    recorded there, which catches a truncated or replaced file before it is hashed.

    Raises:
        StoreError: a missing file, a size other than recorded, or a malformed header.
    """
    path = Path(directory) / f"{check_name(name)}.safetensors"
    if not path.is_file():
        raise StoreError(f"{path}: no such store file")
    size = path.stat().st_size
    recorded = (doc or {}).get("tensors", {}).get("bytes")
    if isinstance(recorded, int) and size != recorded:
        raise StoreError(f"{path}: {size} bytes, {name}.json records {recorded}; the tensor "
                         f"file was truncated, changed or swapped")
    with open(path, "rb") as fh:
        head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < n <= min(MAX_JSON_BYTES, size - 8):
            raise StoreError(f"{path}: not a valid safetensors file (bad header length)")
        try:
            header = json.loads(fh.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StoreError(f"{path}: not a valid safetensors file ({exc})") from None
    if not isinstance(header, dict):
        raise StoreError(f"{path}: not a valid safetensors file (header is not an object)")
    out: dict[str, tuple[str, list[int]]] = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        if not (isinstance(info, dict) and isinstance(info.get("dtype"), str)
                and isinstance(info.get("shape"), list)):
            raise StoreError(f"{path}: not a valid safetensors file (entry {key!r})")
        out[key] = (info["dtype"], list(info["shape"]))
    return out


def load_tensors(directory: str | os.PathLike, name: str, *,
                 kind: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read group ``name``: its JSON, then its tensors after checking their SHA-256.

    Returns:
        ``(tensors, meta)`` with CPU tensors and the validated JSON document.

    Raises:
        StoreError: see :func:`read_meta`; also a missing, truncated, tampered or foreign
            tensor file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    doc = read_meta(directory, name, kind=kind)
    path = Path(directory) / f"{name}.safetensors"
    if not path.is_file():
        raise StoreError(f"{path}: no such store file")
    read_header(directory, name, doc)  # size and header first: cheap, before reading it all
    blob = path.read_bytes()  # hash and parse the very same bytes
    if hashlib.sha256(blob).hexdigest() != doc["tensors"]["sha256"]:
        raise StoreError(f"{path}: SHA-256 does not match {name}.json; the tensor file was "
                         f"changed, truncated or swapped")
    try:
        tensors = st_load(blob)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise StoreError(f"{path}: not a valid safetensors file ({exc})") from None
    return tensors, doc


def versions() -> dict[str, str]:
    """Versions of the packages a stored model depends on."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import robustkit

    out = {"robustkit": robustkit.__version__, "python": platform.python_version()}
    for pkg in ("torch", "scikit-learn", "safetensors", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy/torch scalars
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON-serializable")
