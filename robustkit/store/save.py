"""Writing a model: its tensors and metadata as one group (``model.safetensors`` +
``model.json``, each written atomically, tensors first), and clearing a folder before a
replacement so that nothing of the old model outlives it."""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from robustkit.data import scale_doc
from robustkit.tensorfiles import save_tensors

if TYPE_CHECKING:
    from robustkit.data import DatasetInfo
    from robustkit.models.trainer import TrainRecord


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
        >>> from robustkit import store
        >>> d = store.save(module, tempfile.mkdtemp(), record=rec)
        >>> store.load(d)[1].family
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
    return {"data_scale": scale_doc(info)}


def _record_metrics(rec: TrainRecord) -> dict[str, float]:
    return {"train_accuracy": rec.train_accuracy, "test_accuracy": rec.test_accuracy,
            "n_train": rec.n_train, "n_test": rec.n_test, "seconds": rec.seconds}


def clear(directory: str | os.PathLike) -> list[str]:
    """Remove the stored groups (``*.json`` + ``*.safetensors``, and an imported graph's
    ``*.onnx``) directly in ``directory``, so that replacing a model leaves nothing of the
    old one (a detector beside a model that no longer has one, a stale ``score.json``, an
    ONNX graph under a torch import). Subfolders stay. Returns the names removed."""
    d = Path(directory)
    gone = []
    for p in sorted(d.glob("*")) if d.is_dir() else []:
        if p.is_file() and p.suffix in (".json", ".safetensors", ".onnx"):
            p.unlink()
            gone.append(p.name)
    return gone
