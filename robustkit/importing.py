"""Bring your own model: check a converted model against its source, then store it.

Each ``import_*`` function converts a model made elsewhere (a skops file, an ONNX graph,
the user's torch code + safetensors weights), checks it on the dataset's test split
(input size, classes, finite weights and outputs, logits rather than probabilities,
agreement with the original), and stores it in a workspace like a trained model, so
``robustkit attack --model NAME`` / ``score`` use it by name. Nothing is unpickled; the
source file's SHA-256 and the library versions go into ``model.json``.

The name, the dataset name and the options are checked before any file or dataset is
read, and a model already stored under the name is replaced only with ``force=True``,
after every check of the new one passed.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustkit import store
from robustkit.data import Dataset, check_name, load_dataset
from robustkit.models.onnx_model import check_onnxruntime, from_onnx, save_onnx
from robustkit.models.outputs import (
    check_finite_state,
    check_output_shape,
    check_outputs_option,
    check_scores,
)
from robustkit.models.registry import accuracy
from robustkit.models.sklearn import classes_of, from_sklearn
from robustkit.models.sklearn.skops_io import load_skops, sha256_file
from robustkit.models.torch_model import check_builder, from_builder, read_weights

ONNX_TOLERANCE = 1e-5
CHECK_BATCH = 512


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


def target_dir(workdir: str | os.PathLike, name: str, *, force: bool = False) -> Path:
    """The folder model ``name`` goes to; checked before anything is read.

    Raises:
        ValueError: ``name`` is not a safe folder name.
        FileExistsError: a model is stored under ``name`` and ``force`` is False.
    """
    target = store.model_dir(workdir, name)
    if (target / "model.json").exists() and not force:
        raise FileExistsError(f"model {name!r} already exists in {workdir}; pass --force "
                              f"(library: force=True) to replace it or choose another name")
    return target


def import_sklearn(file: str | os.PathLike, *, name: str, dataset: str,
                   workdir: str | os.PathLike = "runs", n_check: int = 500,
                   root: str | None = None, seed: int = 0,
                   force: bool = False) -> ImportRecord:
    """Load a skops file (trusted types only), convert, verify ``predict``, store.

    Raises:
        ValueError: an untrusted or non-skops file, a feature count or class list that does
            not match the dataset, non-finite parameters or outputs, or any prediction that
            differs from ``estimator.predict``.
        TypeError: an unsupported estimator.
        FileExistsError: ``name`` is taken and ``force`` is False.
    """
    target = target_dir(workdir, name, force=force)
    check_name(dataset)
    _need("skops")
    import sklearn

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
    check_finite_state(model.state_dict(), file)
    x = te.x[:n_check]
    flat = x.reshape(len(x), -1).double()
    with torch.no_grad():
        out = model(flat.reshape(x.shape))
    check_scores(out, None, file, te.info.name)
    ref = est.predict(flat.numpy())
    wrong = int((out.argmax(1).numpy() != ref).sum())
    if wrong:
        raise ValueError(f"the converted model disagrees with estimator.predict on {wrong} of "
                         f"{len(x)} test inputs; not stored")
    extra = {"source": str(file), "sha256": sha256_file(file), "estimator": type(est).__name__,
             "sklearn_version": sklearn.__version__}
    return _store(model, "sklearn", target, te, extra, "predict_mismatches", 0.0)


def import_onnx(file: str | os.PathLike, *, name: str, dataset: str,
                workdir: str | os.PathLike = "runs", n_check: int = 256,
                root: str | None = None, seed: int = 0, force: bool = False,
                outputs: str = "logits") -> ImportRecord:
    """Convert an ONNX graph (onnx2torch), check it against onnxruntime, store it.

    Args:
        outputs: what the graph's output is: ``"logits"``, or ``"probabilities"`` (a
            graph ending in a softmax; the stored model returns their log).

    Raises:
        ValueError: a graph that does not convert, does not take exactly one input, outputs
            other than (N, n_classes) finite logits of the dataset's classes (or
            probabilities without ``outputs="probabilities"``), or differs from
            onnxruntime by more than 1e-5.
        FileExistsError: ``name`` is taken and ``force`` is False.
    """
    target = target_dir(workdir, name, force=force)
    check_name(dataset)
    check_outputs_option(outputs)
    _need("onnx", "onnxruntime", "onnx2torch")
    import onnx

    data = Path(file).read_bytes()
    te = load_dataset(dataset, "test", root=root, seed=seed)
    model = from_onnx(data, list(te.info.input_shape), outputs=outputs)
    _check_network(model, te, file, outputs)
    diff = check_onnxruntime(model, te.x[:n_check])
    if not diff <= ONNX_TOLERANCE:
        raise ValueError(f"the converted ONNX model differs from onnxruntime by {diff:.3g} "
                         f"(> {ONNX_TOLERANCE}); not stored")
    extra = {"source": str(file), "sha256": model.arch["graph_sha256"],
             "onnx_version": onnx.__version__}
    return _store(model, "onnx", target, te, extra, "max_abs_diff_onnxruntime", diff,
                  write=lambda: save_onnx(model, target))


def import_torch(builder: str, weights: str | os.PathLike, *, name: str, dataset: str,
                 workdir: str | os.PathLike = "runs", root: str | None = None,
                 seed: int = 0, force: bool = False, outputs: str = "logits") -> ImportRecord:
    """Build the user's network (``module:function``), load safetensors weights, store.

    Loading the stored model imports ``module`` again: it runs the user's code. No file
    content is unpickled; the weights are read (and checked to be finite) before the
    builder runs.

    Args:
        outputs: ``"logits"``, or ``"probabilities"`` for a network ending in a softmax.

    Raises:
        ValueError: a malformed builder, weights that are not safetensors, hold NaN/inf or
            do not fit the network, or outputs other than (N, n_classes) finite logits of
            the dataset's classes (or probabilities without ``outputs="probabilities"``).
        FileExistsError: ``name`` is taken and ``force`` is False.
    """
    target = target_dir(workdir, name, force=force)
    check_name(dataset)
    check_builder(builder)
    check_outputs_option(outputs)
    state = read_weights(weights)
    check_finite_state(state, weights)
    te = load_dataset(dataset, "test", root=root, seed=seed)
    model = from_builder(builder, str(weights), list(te.info.input_shape), outputs=outputs,
                         state=state)
    _check_network(model, te, builder, outputs)
    extra = {"source": str(weights), "sha256": sha256_file(weights), "builder": builder}
    return _store(model, "torch", target, te, extra, "none", 0.0)


def _check_network(model: nn.Module, te: Dataset, source: Any, outputs: str) -> None:
    """(N, K) finite outputs of the dataset's K classes, of the kind ``outputs`` says."""
    k = model.arch["n_classes"]  # type: ignore[index]
    if k != te.info.n_classes:
        raise ValueError(f"{source}: the model outputs {k} logits; {te.info.name} has "
                         f"{te.info.n_classes} classes")
    scores = _scores(model, te.x)
    check_output_shape(scores, len(te.x), source)
    check_scores(scores, outputs, source, te.info.name)


def _scores(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The network's raw outputs on x, in batches (``model.scores``: before any log)."""
    fn = getattr(model, "scores", model)
    with torch.no_grad():
        return torch.cat([fn(x[i:i + CHECK_BATCH]) for i in range(0, len(x), CHECK_BATCH)])


def _store(model: nn.Module, kind: str, target: Path, te: Dataset, extra: dict[str, Any],
           check: str, value: float, write: Callable[[], Any] | None = None) -> ImportRecord:
    """Replace what ``target`` held (every check passed) by the model and its metadata."""
    acc = accuracy(model, te.x, te.y)
    store.clear(target)  # a replaced model's files (a detector, a graph) must not outlive it
    if write is not None:
        write()
    store.save(model, target, family=kind, params={}, dataset=te.info,
               metrics={"test_accuracy": acc, "n_test": len(te.y), check: value},
               extra={"imported": kind, **extra})
    return ImportRecord(name=target.name, kind=kind, path=str(target), source=extra["source"],
                        sha256=extra["sha256"], dataset=te.info.name,
                        n_checked=len(te.y), check=check, check_value=value,
                        test_accuracy=acc)
