"""Image-folder datasets (``folder:PATH``): layout, resizing, channels, streaming, bad files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _datafiles import FOLDER_CLASSES as CLASSES
from _datafiles import write_folder
from PIL import Image

from robustkit import data as datasets
from robustkit import load_dataset
from robustkit.data import iter_batches, parse_name


def test_loads_pixels_classes_and_labels_exactly(tmp_path):
    written = write_folder(tmp_path)
    for split in ("train", "test"):
        x, y, info = load_dataset("folder:pets,size=12", split, root=tmp_path)
        assert info.classes == CLASSES and info.input_shape == (3, 12, 12)
        assert x.shape == (9, 3, 12, 12) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and y.tolist() == [k for _, k in written[split]]
        want = np.stack([px.transpose(2, 0, 1) for px, _ in written[split]]) / 255
        assert torch.equal(x, torch.from_numpy(want).float())


def test_resizes_to_default_32_and_keeps_grayscale(tmp_path):
    write_folder(tmp_path, "gray", size=10, mode="L")
    x, _, info = load_dataset("folder:gray", "train", root=tmp_path)
    assert info.input_shape == (1, 32, 32) and x.shape == (9, 1, 32, 32)
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    x2, _, info2 = load_dataset("folder:gray,size=8x16,channels=3", "test", root=tmp_path)
    assert info2.input_shape == (3, 8, 16) and x2.shape == (9, 3, 8, 16)
    # a gray image converted to RGB has three equal planes
    assert torch.equal(x2[:, 0], x2[:, 1]) and torch.equal(x2[:, 1], x2[:, 2])


def test_path_is_relative_to_data_root_env_or_absolute(tmp_path, monkeypatch):
    write_folder(tmp_path)
    monkeypatch.setenv(datasets.DATA_ENV, str(tmp_path))
    a = load_dataset("folder:pets,size=12", "test")
    b = load_dataset(f"folder:{tmp_path / 'pets'},size=12", "test", root="/nonexistent")
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)


def test_stream_yields_the_in_memory_samples_in_order(tmp_path):
    write_folder(tmp_path, n=5)
    ds = load_dataset("folder:pets,size=12", "train", root=tmp_path, limit=9, seed=3)
    stream = iter_batches("folder:pets,size=12", "train", tmp_path, batch_size=4, limit=9,
                          seed=3)
    xs, ys = zip(*stream)
    assert [len(b) for b in xs] == [4, 4, 1] and stream.n == 9
    assert torch.equal(torch.cat(xs), ds.x) and torch.equal(torch.cat(ys), ds.y)
    assert stream.info == ds.info
    assert sorted(torch.bincount(ds.y).tolist()) == [3, 3, 3]  # stratified limit


def test_describe_and_check_name(tmp_path):
    write_folder(tmp_path)
    card = datasets.describe("folder:pets", tmp_path)
    assert card["available"] and not card["builtin"]
    assert not datasets.describe("folder:absent", tmp_path)["available"]
    assert parse_name("folder:pets,size=64").options == {"size": "64", "channels": None}
    for bad in ("folder:", "photos:pets", "folder:pets,label=y", "folder:pets,size"):
        with pytest.raises(ValueError, match="dataset"):
            datasets.check_name(bad)


def _one_line(exc: pytest.ExceptionInfo, path: Path, words: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg and words in msg


def test_corrupt_image_is_named(tmp_path):
    write_folder(tmp_path)
    bad = tmp_path / "pets" / "test" / "dog" / "1.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(ValueError) as exc:
        load_dataset("folder:pets", "test", root=tmp_path)
    _one_line(exc, bad, "corrupt")
    stream = iter_batches("folder:pets", "test", tmp_path, batch_size=2)
    with pytest.raises(ValueError) as exc:
        list(stream)  # streamed: found when its batch is read
    _one_line(exc, bad, "corrupt")


def test_truncated_image_is_named(tmp_path):
    write_folder(tmp_path, size=40)
    bad = tmp_path / "pets" / "train" / "emu" / "0.png"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(ValueError) as exc:
        load_dataset("folder:pets", "train", root=tmp_path)
    _one_line(exc, bad, "corrupt")


def test_class_without_images_is_named(tmp_path):
    write_folder(tmp_path)
    empty = tmp_path / "pets" / "train" / "fox"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError) as exc:
        load_dataset("folder:pets", "train", root=tmp_path)
    _one_line(exc, empty, "no images")


def test_empty_split_and_unknown_test_class(tmp_path):
    write_folder(tmp_path)
    for c in CLASSES:
        for f in (tmp_path / "pets" / "test" / c).iterdir():
            f.unlink()
        (tmp_path / "pets" / "test" / c).rmdir()
    split = tmp_path / "pets" / "test"
    with pytest.raises(ValueError) as exc:
        load_dataset("folder:pets", "test", root=tmp_path)
    _one_line(exc, split, "empty split")
    (split / "yak").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(split / "yak" / "0.png")
    with pytest.raises(ValueError) as exc:
        load_dataset("folder:pets", "test", root=tmp_path)
    _one_line(exc, split, "yak")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_dataset("folder:nothing", "train", root=tmp_path)
