"""Bring your own model: check a converted model against its source, then store it.

Each ``import_*`` function converts a model made elsewhere (a skops file, an ONNX graph,
the user's torch code + safetensors weights), checks it on the dataset's test split
(input size, classes, agreement with the original), and stores it in a workspace like a
trained model, so ``robustkit attack --model NAME`` / ``score`` use it by name. Nothing is
unpickled; the source file's SHA-256 and the library versions go into ``model.json``.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustkit import store
from robustkit.data import Dataset, load_dataset

ONNX_TOLERANCE = 1e-5


def _need(*modules: str) -> None:
    """Raise a one-line ImportError naming the ``byom`` extra when a module is missing."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"{', '.join(missing)} not installed: pip install 'robustkit[byom]'")


@dataclass(frozen=True)
class ImportRecord:
    """What an import did: where the model went and how it was checked."""

    name: str
    kind: str
    path: str
    source: str
    sha256: str
    dataset: str
    n_checked: int
    check: str
    check_value: float
    test_accuracy: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def import_sklearn(file: str | os.PathLike, *, name: str, dataset: str,
                   workdir: str | os.PathLike = "runs", n_check: int = 500,
                   root: str | None = None, seed: int = 0) -> ImportRecord:
    """Load a skops file (trusted types only), convert, verify ``predict``, store.

    Raises:
        ValueError: an untrusted or non-skops file, a feature count or class list that does
            not match the dataset, or any prediction that differs from ``estimator.predict``.
        TypeError: an unsupported estimator.
    """
    _need("skops")
    import sklearn

    from robustkit.models.sklearn import classes_of, from_sklearn
    from robustkit.models.sklearn.skops_io import load_skops, sha256_file

    est = load_skops(file)
    te = load_dataset(dataset, "test", root=root, seed=seed)
    dim = math.prod(te.info.input_shape)
    n_in = getattr(est, "n_features_in_", None)
    if n_in != dim:
        raise ValueError(f"{file}: the estimator was fitted on {n_in} features; {dataset} "
                         f"inputs have {dim} ({list(te.info.input_shape)})")
    classes = classes_of(est)
    if classes != list(range(te.info.n_classes)):
        raise ValueError(f"{file}: the estimator's classes_ {classes} are not the dataset's "
                         f"labels 0..{te.info.n_classes - 1}")
    model = from_sklearn(est, te.info.input_shape)
    x = te.x[:n_check]
    flat = x.reshape(len(x), -1).double()
    with torch.no_grad():
        got = model(flat.reshape(x.shape)).argmax(1).numpy()
    ref = est.predict(flat.numpy())
    wrong = int((got != ref).sum())
    if wrong:
        raise ValueError(f"the converted model disagrees with estimator.predict on {wrong} of "
                         f"{len(x)} test inputs; not stored")
    extra = {"source": str(file), "sha256": sha256_file(file), "estimator": type(est).__name__,
             "sklearn_version": sklearn.__version__}
    return _store(model, "sklearn", name, te, workdir, extra, "predict_mismatches", 0.0)


def import_onnx(file: str | os.PathLike, *, name: str, dataset: str,
                workdir: str | os.PathLike = "runs", n_check: int = 256,
                root: str | None = None, seed: int = 0) -> ImportRecord:
    """Convert an ONNX graph (onnx2torch), check it against onnxruntime, store it.

    Raises:
        ValueError: a graph that does not convert, takes other inputs or outputs other than
            the dataset's classes, or differs from onnxruntime by more than 1e-5.
    """
    _need("onnx", "onnxruntime", "onnx2torch")
    import onnx

    from robustkit.models.onnx_model import check_onnxruntime, from_onnx, save_onnx

    data = Path(file).read_bytes()
    te = load_dataset(dataset, "test", root=root, seed=seed)
    model = from_onnx(data, list(te.info.input_shape))
    _check_classes(model, te, file)
    diff = check_onnxruntime(model, te.x[:n_check])
    if not diff <= ONNX_TOLERANCE:
        raise ValueError(f"the converted ONNX model differs from onnxruntime by {diff:.3g} "
                         f"(> {ONNX_TOLERANCE}); not stored")
    target = store.model_dir(workdir, name)
    save_onnx(model, target)
    extra = {"source": str(file), "sha256": model.arch["graph_sha256"],
             "onnx_version": onnx.__version__}
    return _store(model, "onnx", name, te, workdir, extra, "max_abs_diff_onnxruntime", diff)


def import_torch(builder: str, weights: str | os.PathLike, *, name: str, dataset: str,
                 workdir: str | os.PathLike = "runs", root: str | None = None,
                 seed: int = 0) -> ImportRecord:
    """Build the user's network (``module:function``), load safetensors weights, store.

    Loading the stored model imports ``module`` again: it runs the user's code. No file
    content is unpickled.
    """
    from robustkit.models.sklearn.skops_io import sha256_file
    from robustkit.models.torch_model import from_builder

    te = load_dataset(dataset, "test", root=root, seed=seed)
    model = from_builder(builder, str(weights), list(te.info.input_shape))
    _check_classes(model, te, builder)
    extra = {"source": str(weights), "sha256": sha256_file(weights), "builder": builder}
    return _store(model, "torch", name, te, workdir, extra, "none", 0.0)


def _check_classes(model: nn.Module, te: Dataset, source: Any) -> None:
    k = model.arch["n_classes"]  # type: ignore[index]
    if k != te.info.n_classes:
        raise ValueError(f"{source}: the model outputs {k} logits; {te.info.name} has "
                         f"{te.info.n_classes} classes")


def _store(model: nn.Module, kind: str, name: str, te: Dataset, workdir: str | os.PathLike,
           extra: dict[str, Any], check: str, value: float) -> ImportRecord:
    from robustkit.models import accuracy

    target = store.model_dir(workdir, name)
    acc = accuracy(model, te.x, te.y)
    store.save(model, target, family=kind, params={}, dataset=te.info,
               metrics={"test_accuracy": acc, "n_test": len(te.y), check: value},
               extra={"imported": kind, **extra})
    return ImportRecord(name=name, kind=kind, path=str(target), source=extra["source"],
                        sha256=extra["sha256"], dataset=te.info.name,
                        n_checked=len(te.y), check=check, check_value=value,
                        test_accuracy=acc)
