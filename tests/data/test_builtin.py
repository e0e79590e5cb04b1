"""Dataset loaders: built-in sets, file-based sets from tiny files written here, real MNIST."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from _datafiles import cifar_bytes, idx_bytes, rng, write_cifar, write_mnist

from robustkit import data as datasets
from robustkit import load_dataset
from robustkit.data.formats import read_cifar_batch, read_idx


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("name, folder", [("mnist", "MNIST/raw"),
                                          ("fashion-mnist", "FashionMNIST/raw")])
def test_idx_sets_from_tiny_files(tmp_path, name, folder, gz):
    written = write_mnist(tmp_path, folder, gz=gz, n={"train": 30, "test": 20})
    for split in ("train", "test"):
        x, y, info = load_dataset(name, split, root=tmp_path)
        wx, wy = written[split]
        assert x.shape == (len(wx), 1, 28, 28) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and y.tolist() == wy.tolist()
        assert torch.allclose(x[:, 0], torch.from_numpy(wx).float() / 255)
        assert x.min() == 0 and x.max() == 1
        assert info.input_shape == (1, 28, 28) and info.n_classes == 10
    assert info.classes[0] == ("0" if name == "mnist" else "T-shirt/top")


def test_data_root_from_env(tmp_path, monkeypatch):
    write_mnist(tmp_path, "MNIST/raw", gz=True, n={"train": 10, "test": 10})
    monkeypatch.setenv(datasets.DATA_ENV, str(tmp_path))
    assert len(load_dataset("mnist", "test").y) == 10
    assert datasets.describe("mnist")["available"] is True


def test_limit_on_file_set_is_stratified(tmp_path):
    write_mnist(tmp_path, "MNIST/raw", gz=False, n={"train": 100, "test": 10})
    ds = load_dataset("mnist", "train", root=tmp_path, limit=50)
    assert len(ds.y) == 50 and ds.y.bincount().tolist() == [5] * 10


def corrupt_cases(good: bytes) -> dict[str, bytes]:
    return {
        "truncated": good[:-7],
        "padded": good + b"\0",
        "bad magic": b"\1\2" + good[2:],
        "wrong type": good[:2] + b"\x0d" + good[3:],
        "empty": b"",
        "short header": good[:6],
    }


@pytest.mark.parametrize("case", list(corrupt_cases(b"x" * 20)))
@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_corrupt_idx_raises_value_error(tmp_path, case, gz):
    good = idx_bytes(rng.integers(0, 256, size=(3, 28, 28)))
    data = corrupt_cases(good)[case]
    path = tmp_path / ("f-idx3-ubyte.gz" if gz else "f-idx3-ubyte")
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(ValueError, match=str(path.name)):
        read_idx(path, ndim=3)


def test_truncated_gzip_stream_raises_value_error(tmp_path):
    path = tmp_path / "f-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.arange(500) % 10))[:-30])
    with pytest.raises(ValueError, match="gzip|truncated"):
        read_idx(path, ndim=1)


def test_idx_wrong_ndim_and_label_mismatch(tmp_path):
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(idx_bytes(np.arange(5)))
    with pytest.raises(ValueError, match="expected 3"):
        read_idx(path, ndim=3)
    write_mnist(tmp_path, "MNIST/raw", gz=False, n={"train": 10, "test": 10})
    (tmp_path / "MNIST/raw/t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.arange(9)))
    with pytest.raises(ValueError, match="9 labels"):
        load_dataset("mnist", "test", root=tmp_path)


def test_cifar10_binary_batches(tmp_path):
    written = write_cifar(tmp_path, n=3)
    x, y, info = load_dataset("cifar10", "train", root=tmp_path)
    assert x.shape == (15, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    wx, wy = written["train"]
    assert torch.equal(x, torch.from_numpy(wx).float() / 255)
    assert y.tolist() == wy.tolist()
    assert info.classes[0] == "airplane" and info.n_classes == 10
    x, y, _ = load_dataset("cifar10", "test", root=tmp_path)
    xt, yt = written["test"]
    assert torch.equal(x, torch.from_numpy(xt).float() / 255) and y.tolist() == yt.tolist()


def test_cifar_corrupt_batches(tmp_path):
    data, _, _ = cifar_bytes(2)
    bad = {"trunc.bin": data[:-1], "empty.bin": b"", "label.bin": b"\x0b" + data[1:]}
    for fname, blob in bad.items():
        (tmp_path / fname).write_bytes(blob)
        with pytest.raises(ValueError, match=fname):
            read_cifar_batch(tmp_path / fname)


@pytest.mark.parametrize("name, expect", [
    ("mnist", "MNIST/raw"), ("fashion-mnist", "FashionMNIST/raw"),
    ("cifar10", "cifar-10-batches-bin"),
])
def test_missing_files_name_the_folder_and_how_to_fix(tmp_path, monkeypatch, name, expect):
    monkeypatch.delenv(datasets.DATA_ENV, raising=False)
    with pytest.raises(FileNotFoundError) as no_root:
        load_dataset(name, "test")
    with pytest.raises(FileNotFoundError) as missing:
        load_dataset(name, "test", root=tmp_path)
    for exc in (no_root, missing):
        msg = str(exc.value)
        assert expect in msg and "--data-root" in msg and datasets.DATA_ENV in msg
        assert "\n" not in msg
    assert str(tmp_path) in str(missing.value)
    assert datasets.describe(name, tmp_path)["available"] is False
    if name == "cifar10":
        assert "pickle" in str(missing.value) and "test_batch.bin" in str(missing.value)


def test_real_mnist(mnist_root):
    sizes = {}
    for split in ("train", "test"):
        x, y, _ = load_dataset("mnist", split, root=mnist_root)
        assert x.shape[1:] == (1, 28, 28) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and set(y.unique().tolist()) == set(range(10))
        assert x.min() == 0.0 and x.max() == 1.0
        assert 0.12 < float(x.mean()) < 0.14  # MNIST's known mean pixel is ~0.13
        sizes[split] = len(y)
    assert sizes == {"train": 60000, "test": 10000}


def test_digits_shapes_splits_and_determinism():
    tr = load_dataset("digits", "train")
    te = load_dataset("digits", "test")
    assert tr.x.shape == (1347, 1, 8, 8) and te.x.shape == (450, 1, 8, 8)
    assert tr.x.dtype == torch.float32 and tr.y.dtype == torch.int64
    assert 0 <= float(tr.x.min()) and float(tr.x.max()) <= 1
    again = load_dataset("digits", "train")
    assert torch.equal(tr.x, again.x) and torch.equal(tr.y, again.y)
    other = load_dataset("digits", "train", seed=1)
    assert not torch.equal(tr.y, other.y)
    # stratified: every class keeps its share of the 1797 images in both splits
    share = tr.y.bincount().float() / len(tr.y) - te.y.bincount().float() / len(te.y)
    assert share.abs().max() < 0.01
    small = load_dataset("digits", "train", limit=100)
    assert len(small.y) == 100 and small.y.bincount().min() >= 9


@pytest.mark.parametrize("name, k", [("moons", 2), ("xor", 2), ("blobs", 3)])
def test_two_d_sets(name, k):
    x, y, info = load_dataset(name, "train")
    assert x.shape == (750, 2) and x.dtype == torch.float32 and info.n_classes == k
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert sorted(y.unique().tolist()) == list(range(k))
    assert torch.equal(x, load_dataset(name, "train").x)


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "nope"}, "valid: blobs, cifar10, digits"),
    ({"name": "digits", "split": "val"}, "split must be one of"),
    ({"name": "digits", "limit": 0}, "limit must be a positive integer"),
    ({"name": "digits", "limit": True}, "limit must be a positive integer"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_dataset(**kwargs)


def test_describe_lists_every_dataset():
    for name in datasets.names():
        d = datasets.describe(name)
        assert d["name"] == name and d["n_classes"] == len(d["classes"]) >= 2
    assert datasets.describe("digits")["input_shape"] == [1, 8, 8]
