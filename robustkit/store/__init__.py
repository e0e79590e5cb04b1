"""Safe model persistence: tensors through safetensors, everything else through JSON.

A store directory holds one or more named groups, each a pair of files written
atomically, tensors first and JSON last: ``<name>.safetensors`` (tensors only) and
``<name>.json`` (what the tensors are). A model is the group ``model``; a defense may put
e.g. a ``detector`` module or a ``uap`` tensor group beside it. Loading never unpickles:
JSON is parsed, the tensor file's SHA-256 is checked against the JSON, the bytes that
were hashed are parsed by safetensors, and the module is rebuilt from ``arch`` through the
model registry. The hash detects corrupted or swapped tensor files; it is not a signature
(whoever can rewrite both files can make them agree), and safety does not rest on it.

The package, by responsibility: :mod:`~robustkit.store.meta` (what ``model.json`` says),
:mod:`~robustkit.store.save` (writing and clearing a model), :mod:`~robustkit.store.load`
(loading and verifying one), :mod:`~robustkit.store.workspace` (finding models by name);
the file layer (atomic writes, safetensors groups) is :mod:`robustkit.tensorfiles`.
"""
from __future__ import annotations

from robustkit.store.load import Builder, load, verify
from robustkit.store.meta import ModelMeta, read_model_meta
from robustkit.store.save import clear, save
from robustkit.store.workspace import ModelEntry, find_model, list_models, model_dir

# The file layer, re-exported: ``store.save_tensors`` etc. are part of this package's API.
from robustkit.tensorfiles import (
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

__all__ = [
    "FORMAT", "FORMAT_VERSION", "MAX_JSON_BYTES", "Builder", "ModelEntry", "ModelMeta",
    "StoreError", "atomic_write", "check_name", "clear", "dtype_code", "find_model",
    "list_models", "load", "load_tensors", "model_dir", "read_header", "read_meta",
    "read_model_meta", "save", "save_tensors", "verify", "versions",
]
