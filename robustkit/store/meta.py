"""What ``<name>.json`` says about a stored module: :class:`ModelMeta`, read and checked
without loading any tensor."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from robustkit.tensorfiles import StoreError, read_meta


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


def read_model_meta(directory: str | os.PathLike, name: str = "model") -> ModelMeta:
    """The validated metadata of stored module ``name``, without loading its tensors."""
    return meta_from_doc(read_meta(directory, name, kind="module"), Path(directory))


def meta_from_doc(doc: dict[str, Any], directory: Path) -> ModelMeta:
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
