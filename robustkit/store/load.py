"""Loading and verifying a model: the JSON, the tensor file's size, header and SHA-256,
and the header's tensors against the module its ``arch`` describes (built on the meta
device first, so that a tampered arch allocates nothing), then the module rebuilt through
the model registry and its tensors loaded. Nothing is ever unpickled."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustkit import models
from robustkit.store.meta import ModelMeta, meta_from_doc
from robustkit.tensorfiles import StoreError, dtype_code, load_tensors, read_header, read_meta

Builder = Callable[[Mapping[str, Any]], nn.Module]


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
    meta = meta_from_doc(doc, directory)
    header = read_header(directory, name, doc)
    _check_arch_size(meta.arch, len(header), directory / f"{name}.json")
    if build is None and meta.family in models.imported_kinds():
        # Imported models (ONNX graphs, user builders) are not built on the meta device:
        # their tensors are checked against the real module after the build.
        return meta
    with torch.device("meta"):
        skeleton = _rebuild(meta, build, directory)
    _check_state(_spec(skeleton.state_dict()), header, directory / f"{name}.safetensors")
    return meta


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
