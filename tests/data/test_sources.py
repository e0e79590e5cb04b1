"""The contract every registered dataset source keeps, and how names reach the sources.

Parametrized over ``robustkit.data.SOURCES``: a new source adds one entry to ``EXAMPLES``
(tiny files it can load from ``tmp_path``) and is then held to the data contract with no
further test code: x float32 in [0, 1] shaped as ``info.input_shape``, y int64 class
indices, ``describe`` agreeing with what loads, a seeded, repeatable ``limit``, and
``iter_batches`` yielding the very samples ``load_dataset`` returns, in order.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from _datafiles import write_cifar, write_folder, write_mnist

from robustkit import data


def _files(root: Path) -> list[str]:
    write_mnist(root, "MNIST/raw", gz=True, n={"train": 30, "test": 20})
    write_mnist(root, "FashionMNIST/raw", gz=False, n={"train": 30, "test": 20})
    write_cifar(root, n=4)
    return ["mnist", "fashion-mnist", "cifar10"]


def _folder(root: Path) -> list[str]:
    write_folder(root, n=4, size=8)
    write_folder(root, "gray", n=4, size=6, mode="L")
    return ["folder:pets,size=8", "folder:gray,size=5x7"]


def _table(root: Path) -> list[str]:
    (root / "t").mkdir(parents=True)
    rows = "\n".join(f"{i},{i * i % 7},{'ab'[i % 2]}" for i in range(20))
    for split in data.SPLITS:
        (root / "t" / f"{split}.csv").write_text(f"u,v,label\n{rows}\n")
    return ["table:t"]


# One example per source: writes files under the root, returns names to load from it.
EXAMPLES: dict[str, Callable[[Path], list[str]]] = {
    "builtin": lambda root: ["digits", "moons", "xor", "blobs"],
    "files": _files,
    "folder": _folder,
    "table": _table,
}


def test_every_source_has_an_example():
    assert sorted(EXAMPLES) == sorted(data.SOURCES)


def test_every_named_set_is_in_an_example(tmp_path):
    named = [n for kind in EXAMPLES for n in EXAMPLES[kind](tmp_path / kind) if ":" not in n]
    assert sorted(named) == data.names()


def _rows_within(sub: torch.Tensor, full: torch.Tensor) -> bool:
    """Every row of ``sub`` is a row of ``full``."""
    a, b = sub.flatten(1), full.flatten(1)
    return bool((a[:, None, :] == b[None, :, :]).all(-1).any(1).all())


@pytest.mark.parametrize("kind", sorted(data.SOURCES))
def test_source_contract(kind, tmp_path):
    for name in EXAMPLES[kind](tmp_path):
        assert data.source_of(name).kind == kind
        card = data.describe(name, tmp_path)
        assert card["name"] == name and card["available"] is True
        for split in data.SPLITS:
            x, y, info = data.load_dataset(name, split, root=tmp_path)
            assert x.dtype == torch.float32 and x.ndim in (2, 4) and len(x) > 0
            assert float(x.min()) >= 0 and float(x.max()) <= 1
            assert tuple(x.shape[1:]) == info.input_shape
            assert y.dtype == torch.int64 and y.shape == (len(x),)
            assert 0 <= int(y.min()) and int(y.max()) < info.n_classes
            assert (info.name, info.split) == (name, split)
            if card["input_shape"]:
                assert card["input_shape"] == list(info.input_shape)
                assert card["classes"] == list(info.classes)
        x, y, _ = data.load_dataset(name, "test", root=tmp_path, seed=3)
        k = len(y) // 2
        sub = data.load_dataset(name, "test", root=tmp_path, limit=k, seed=3)
        assert len(sub.y) == k and _rows_within(sub.x, x)
        assert torch.equal(sub.x, data.load_dataset(name, "test", root=tmp_path, limit=k,
                                                    seed=3).x)
        batches = data.iter_batches(name, "test", tmp_path, batch_size=7, limit=k, seed=3)
        xs, ys = zip(*batches)
        assert torch.equal(torch.cat(xs), sub.x) and torch.equal(torch.cat(ys), sub.y)
        assert batches.info == sub.info and batches.n == k


@pytest.mark.parametrize("name, match", [
    ("nope", r"unknown dataset 'nope'; valid: blobs, cifar10, digits"),
    ("zip:foo", r"unknown kind 'zip'; user datasets are folder:PATH or table:PATH"),
    ("digits:x", r"unknown kind 'digits'"),
    ("builtin:digits", r"unknown kind 'builtin'"),
    ("folder:", r"no PATH after 'folder:'"),
    ("table:t,size=3", r"bad option 'size=3'; table takes label=\.\.\."),
])
def test_bad_names_say_what_is_valid(name, match):
    with pytest.raises(ValueError, match=match):
        data.check_name(name)
    with pytest.raises(ValueError, match=match):
        data.load_dataset(name)
