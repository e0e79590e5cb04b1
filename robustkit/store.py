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

import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

# The file layer, re-exported: ``store.save_tensors`` etc. are part of this module's API.
from robustkit.tensorfiles import (  # noqa: F401
    FORMAT,
    FORMAT_VERSION,
    MAX_JSON_BYTES,
    StoreError,
    atomic_write,
    check_name,
    dtype_code,
    load_tensors,
    read_header,
    read_meta,
    save_tensors,
    versions,
)

if TYPE_CHECKING:
    from robustkit.data import DatasetInfo
    from robustkit.models.trainer import TrainRecord

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
    (classes, input shape, and for a table the training min/max per feature, kept as
    ``extra["data_scale"]``). The module must carry ``module.arch``, the constructor
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
        "extra": {**({"device": record.device} if record else {}), **_scale(info),
                  **dict(extra or {})},
    }
    save_tensors(directory, name, model.state_dict(), meta=meta, kind="module")
    return Path(directory)


def _scale(info: DatasetInfo | None) -> dict[str, Any]:
    """A table's training min/max per feature (``extra["data_scale"]``): what eps means."""
    if info is None or getattr(info, "scale", None) is None:
        return {}
    from robustkit.data import scale_doc

    return {"data_scale": scale_doc(info)}


def _record_metrics(rec: TrainRecord) -> dict[str, float]:
    return {"train_accuracy": rec.train_accuracy, "test_accuracy": rec.test_accuracy,
            "n_train": rec.n_train, "n_test": rec.n_test, "seconds": rec.seconds}


def read_model_meta(directory: str | os.PathLike, name: str = "model") -> ModelMeta:
    """The validated metadata of stored module ``name``, without loading its tensors."""
    return _model_meta(read_meta(directory, name, kind="module"), Path(directory))


def _model_meta(doc: dict[str, Any], directory: Path) -> ModelMeta:
    where = directory / f"{doc.get('name')}.json"
    checks = {"name": str, "family": str, "params": dict, "arch": dict, "classes": list,
              "metrics": dict,
              "extra": dict}
    for key, typ in checks.items():
        if not isinstance(doc.get(key), typ):
            raise StoreError(f"{where}: field {key!r} is missing or not a {typ.__name__}")
    shape = doc.get("input_shape")
    if shape is not None and not (isinstance(shape, list)
                                  and all(isinstance(v, int) for v in shape)):
        raise StoreError(f"{where}: field 'input_shape' must be a list of integers")
    arch_shape, k = doc["arch"].get("input_shape"), doc["arch"].get("n_classes")
    if shape is not None and isinstance(arch_shape, list) and list(arch_shape) != shape:
        raise StoreError(f"{where}: input_shape {shape} does not match the input shape "
                         f"{arch_shape} of its arch")
    if doc["classes"] and isinstance(k, int) and len(doc["classes"]) != k:
        raise StoreError(f"{where}: {len(doc['classes'])} classes listed for a model with "
                         f"{k} outputs (arch n_classes)")
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
    directory = Path(directory)
    meta = _checked_meta(directory, name, build)
    tensors, _ = load_tensors(directory, name, kind="module")
    module = _rebuild(meta, build, directory)
    _check_state(_spec(module.state_dict()), _spec(tensors), directory / f"{name}.safetensors")
    module.load_state_dict(tensors, strict=True)
    return module.to(device).eval(), meta


def verify(directory: str | os.PathLike, name: str = "model", *,
           build: Builder | None = None) -> ModelMeta:
    """Check a stored module without loading it: its JSON, the tensor file's size, header
    and SHA-256 against the JSON, and the header's tensors against the module its arch
    describes (built on the meta device, allocating nothing).

    Returns:
        The module's metadata.

    Raises:
        StoreError: what :func:`load` would refuse, with the reason.
    """
    import hashlib

    directory = Path(directory)
    meta = _checked_meta(directory, name, build)
    path = directory / f"{name}.safetensors"
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != meta.sha256:
        raise StoreError(f"{path}: SHA-256 does not match {name}.json; the tensor file was "
                         f"changed, truncated or swapped")
    return meta


def _checked_meta(directory: Path, name: str, build: Builder | None) -> ModelMeta:
    """The metadata, after the tensor file's header was checked against the module its
    arch describes, built on the meta device: a tampered arch (say, ``hidden = [10**7,
    10**7]``) is refused before anything is allocated."""
    doc = read_meta(directory, name, kind="module")
    meta = _model_meta(doc, directory)
    header = read_header(directory, name, doc)
    _check_arch_size(meta.arch, len(header), directory / f"{name}.json")
    if build is None and meta.family in _imported_kinds():
        # Imported models (ONNX graphs, user builders) are not built on the meta device:
        # their tensors are checked against the real module after the build.
        return meta
    with torch.device("meta"):
        skeleton = _rebuild(meta, build, directory)
    _check_state(_spec(skeleton.state_dict()), header, directory / f"{name}.safetensors")
    return meta


def _imported_kinds() -> list[str]:
    from robustkit.models import imported_kinds

    return imported_kinds()


def _check_arch_size(arch: Mapping[str, Any], n_tensors: int, where: Path) -> None:
    # Every entry of an arch list (layer widths, channels) makes at least one tensor, give
    # or take the input shape: a longer list is tampering, and building even on the meta
    # device would take minutes for a million layers.
    for key, value in arch.items():
        if isinstance(value, list) and len(value) > n_tensors + 8:
            raise StoreError(f"{where}: arch field {key!r} lists {len(value)} entries for a "
                             f"tensor file holding {n_tensors} tensors")


def _rebuild(meta: ModelMeta, build: Builder | None, directory: Path) -> nn.Module:
    try:
        if build is None:
            from robustkit import models

            return models.build(meta.family, meta.arch, directory)
        return build(meta.arch)
    except (TypeError, ValueError, RuntimeError, KeyError, ImportError, AttributeError,
            OSError) as exc:
        raise StoreError(f"{directory}: cannot rebuild {meta.family!r} from its stored "
                         f"arch: {exc}") from None


TensorSpecs = Mapping[str, "tuple[str, list[int]]"]


def _spec(tensors: Mapping[str, torch.Tensor]) -> dict[str, tuple[str, list[int]]]:
    return {k: (dtype_code(v.dtype), list(v.shape)) for k, v in tensors.items()}


def _check_state(expected: TensorSpecs, got: TensorSpecs, where: Path) -> None:
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    wrong = [f"{k}: stored {tuple(got[k][1])} {got[k][0]}, model {tuple(v[1])} {v[0]}"
             for k, v in expected.items() if k in got and tuple(got[k]) != tuple(v)]
    if missing or unexpected or wrong:
        parts = ([f"missing {missing}"] if missing else []) + \
                ([f"unexpected {unexpected}"] if unexpected else []) + wrong[:5]
        raise StoreError(f"{where}: tensors do not match the model: {'; '.join(parts)}")


def clear(directory: str | os.PathLike) -> list[str]:
    """Remove the stored groups (``*.json`` + ``*.safetensors``) directly in ``directory``,
    so that replacing a model leaves nothing of the old one (a detector beside a model
    that no longer has one, a stale ``score.json``). Subfolders stay. Returns the names
    removed."""
    d = Path(directory)
    gone = []
    for p in sorted(d.glob("*")) if d.is_dir() else []:
        if p.is_file() and p.suffix in (".json", ".safetensors"):
            p.unlink()
            gone.append(p.name)
    return gone


def model_dir(workdir: str | os.PathLike, name: str) -> Path:
    """``<workdir>/<name>`` for a model name that is a safe folder name."""
    return Path(workdir) / check_name(name, "model name")


def find_model(workdir: str | os.PathLike, name: str) -> Path:
    """The folder of stored model ``name`` in ``workdir`` (trained, defended or imported):
    the one lookup ``attack``, ``score``, ``models show`` and sweep specs share.

    Raises:
        ValueError: ``name`` is not a safe folder name.
        FileNotFoundError: no model of that name; the message lists the stored ones.
    """
    folder = model_dir(workdir, name)
    if not (folder / "model.json").is_file():
        known = ", ".join(e.name for e in list_models(workdir)) or "none"
        raise FileNotFoundError(f"no model {name!r} in {workdir}; available: {known}")
    return folder


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
