"""Safe model persistence: tensors through safetensors, everything else through JSON.

A store directory holds one or more named groups, each a pair of files written
atomically, tensors first and JSON last: ``<name>.safetensors`` (tensors only) and
``<name>.json`` (what the tensors are). A model is the group ``model``; a defense may put
e.g. a ``detector`` module or a ``uap`` tensor group beside it. Loading never unpickles:
JSON is parsed, the tensor file's SHA-256 is checked against the JSON, the bytes that
were hashed are parsed by safetensors, and the module is rebuilt from ``arch`` through the
model registry. The hash detects corrupted or swapped tensor files; it is not a signature
(whoever can rewrite both files can make them agree), and safety does not rest on it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from robustkit.datasets import DatasetInfo
    from robustkit.models.registry import TrainRecord

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


# Modules: a group of kind "module" whose JSON says how to rebuild it.

Builder = Callable[[Mapping[str, Any]], nn.Module]


@dataclass(frozen=True)
class ModelMeta:
    """What ``<name>.json`` says about a stored module (``asdict`` gives its JSON view)."""

    name: str
    family: str
    params: dict
    arch: dict
    dataset: str | None
    input_shape: list[int] | None
    classes: list[str]
    seed: int | None
    metrics: dict
    versions: dict
    sha256: str
    created: str
    extra: dict
    path: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def save(model: nn.Module, directory: str | os.PathLike, *,
         record: TrainRecord | None = None, family: str | None = None,
         params: Mapping[str, Any] | None = None, dataset: DatasetInfo | str | None = None,
         classes: list[str] | None = None, input_shape: list[int] | None = None,
         seed: int | None = None, metrics: Mapping[str, float] | None = None,
         extra: Mapping[str, Any] | None = None, name: str = "model") -> Path:
    """Store a fitted module as ``<name>.safetensors`` + ``<name>.json`` in ``directory``.

    Fields not given explicitly come from ``record`` (family, params, dataset name, seed,
    accuracies, sizes, seconds, device) and from ``dataset`` when it is a ``DatasetInfo``
    (classes, input shape). The module must carry ``module.arch``, the constructor
    arguments :func:`robustkit.models.build` rebuilds it from.

    Args:
        model: the module; only ``model.state_dict()`` tensors are written.
        directory: the model's folder (created if missing); existing files are replaced.
        record: the ``TrainRecord`` of ``robustkit.models.train``.
        family: registry family name (required without ``record``).
        name: group name, so that a folder can hold more than one module.

    Returns:
        ``directory`` as a Path.

    Example:
        >>> import tempfile
        >>> from robustkit import models
        >>> module, rec = models.train("linear", "digits", epochs=1)
        >>> d = save(module, tempfile.mkdtemp(), record=rec)
        >>> load(d)[1].family
        'linear'
    """
    arch = getattr(model, "arch", None)
    if not isinstance(arch, dict):
        raise TypeError(f"model must keep its constructor arguments in a dict `model.arch`, "
                        f"got {type(arch).__name__}")
    family = family or (record.model if record is not None else None)
    if not family:
        raise ValueError("family is required when no record is given")
    info = dataset if dataset is not None and not isinstance(dataset, str) else None
    n_classes = arch.get("n_classes")
    default_classes = [str(i) for i in range(n_classes)] if isinstance(n_classes, int) else []
    meta = {
        "family": family,
        "params": dict(params if params is not None else record.params if record else {}),
        "arch": arch,
        "dataset": (info.name if info else dataset) or (record.dataset if record else None),
        "input_shape": list(input_shape or (info.input_shape if info else None)
                            or arch.get("input_shape") or []) or None,
        "classes": list(classes or (info.classes if info else None) or default_classes),
        "seed": seed if seed is not None else (record.seed if record else None),
        "metrics": {**(_record_metrics(record) if record else {}), **dict(metrics or {})},
        "extra": {**({"device": record.device} if record else {}), **dict(extra or {})},
    }
    save_tensors(directory, name, model.state_dict(), meta=meta, kind="module")
    return Path(directory)


def _record_metrics(rec: TrainRecord) -> dict[str, float]:
    return {"train_accuracy": rec.train_accuracy, "test_accuracy": rec.test_accuracy,
            "n_train": rec.n_train, "n_test": rec.n_test, "seconds": rec.seconds}


def read_model_meta(directory: str | os.PathLike, name: str = "model") -> ModelMeta:
    """The validated metadata of stored module ``name``, without loading its tensors."""
    return _model_meta(read_meta(directory, name, kind="module"), Path(directory))


def _model_meta(doc: dict[str, Any], directory: Path) -> ModelMeta:
    where = directory / f"{doc.get('name')}.json"
    checks = {"family": str, "params": dict, "arch": dict, "classes": list, "metrics": dict,
              "extra": dict}
    for key, typ in checks.items():
        if not isinstance(doc.get(key), typ):
            raise StoreError(f"{where}: field {key!r} is missing or not a {typ.__name__}")
    shape = doc.get("input_shape")
    if shape is not None and not (isinstance(shape, list)
                                  and all(isinstance(v, int) for v in shape)):
        raise StoreError(f"{where}: field 'input_shape' must be a list of integers")
    return ModelMeta(
        name=doc["name"], family=doc["family"], params=doc["params"], arch=doc["arch"],
        dataset=doc.get("dataset"), input_shape=shape, classes=[str(c) for c in doc["classes"]],
        seed=doc.get("seed"), metrics=doc["metrics"], versions=dict(doc.get("versions") or {}),
        sha256=doc["tensors"]["sha256"], created=str(doc.get("created", "")),
        extra=doc["extra"], path=str(directory))


def load(directory: str | os.PathLike, *, name: str = "model",
         device: str | torch.device = "cpu",
         build: Builder | None = None) -> tuple[nn.Module, ModelMeta]:
    """Rebuild a stored module and load its tensors; nothing in the files is executed.

    Args:
        directory: the folder :func:`save` wrote.
        name: group name (``"model"`` unless saved under another name).
        device: where to put the loaded module.
        build: ``build(arch) -> module`` for modules outside the model registry (e.g. a
            defense's detector); default ``robustkit.models.build(family, arch)``.

    Returns:
        ``(module, meta)``; the module is in eval mode.

    Raises:
        StoreError: missing, tampered, truncated or foreign files, an unknown family, or
            tensors whose names, shapes or dtypes do not match the rebuilt module.

    Example:
        >>> module, meta = load("runs/svm-rbf")  # doctest: +SKIP
    """
    tensors, doc = load_tensors(directory, name, kind="module")
    meta = _model_meta(doc, Path(directory))
    try:
        if build is None:
            from robustkit import models

            module = models.build(meta.family, meta.arch)
        else:
            module = build(meta.arch)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise StoreError(f"{directory}: cannot rebuild {meta.family!r} from its stored "
                         f"arch: {exc}") from None
    _check_state(module.state_dict(), tensors, Path(directory) / f"{name}.safetensors")
    module.load_state_dict(tensors, strict=True)
    return module.to(device).eval(), meta


def _check_state(expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor],
                 where: Path) -> None:
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    wrong = [f"{k}: stored {tuple(got[k].shape)} {got[k].dtype}, model "
             f"{tuple(v.shape)} {v.dtype}" for k, v in expected.items()
             if k in got and (got[k].shape != v.shape or got[k].dtype != v.dtype)]
    if missing or unexpected or wrong:
        parts = ([f"missing {missing}"] if missing else []) + \
                ([f"unexpected {unexpected}"] if unexpected else []) + wrong[:5]
        raise StoreError(f"{where}: tensors do not match the model: {'; '.join(parts)}")


def model_dir(workdir: str | os.PathLike, name: str) -> Path:
    """``<workdir>/<name>`` for a model name that is a safe folder name."""
    return Path(workdir) / check_name(name, "model name")


@dataclass(frozen=True)
class ModelEntry:
    """One folder of a workspace: its metadata, or why it could not be read."""

    name: str
    path: str
    meta: ModelMeta | None
    error: str | None = None


def list_models(workdir: str | os.PathLike) -> list[ModelEntry]:
    """Every model folder (one holding ``model.json``) directly under ``workdir``, by name.

    Unreadable or foreign folders are listed with ``error`` set instead of being skipped.
    """
    root = Path(workdir)
    if not root.is_dir():
        return []
    out = []
    for sub in sorted(p for p in root.iterdir() if (p / "model.json").is_file()):
        try:
            out.append(ModelEntry(sub.name, str(sub), read_model_meta(sub)))
        except (StoreError, ValueError, OSError) as exc:
            out.append(ModelEntry(sub.name, str(sub), None, str(exc)))
    return out
