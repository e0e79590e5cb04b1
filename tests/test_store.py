"""The model store: exact round trips for every family, and refusal of bad files."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from robustkit import models, store
from robustkit.store import StoreError


def small(family: str, digits_train) -> torch.nn.Module:
    """A quickly fitted model (one epoch): the store cares about tensors, not accuracy."""
    extra = {"hidden": (8,)} if family == "mlp" else {}
    return models.create(family, epochs=1, **extra).fit(digits_train.x, digits_train.y, seed=0)


@pytest.fixture(scope="module")
def linear_dir(tmp_path_factory, digits_train, digits_test) -> Path:
    d = tmp_path_factory.mktemp("linear")
    store.save(small("linear", digits_train), d, family="linear", params={"epochs": 1},
               dataset=digits_test.info, seed=0, metrics={"test_accuracy": 0.9})
    return d


def fresh_copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_round_trip_gives_identical_logits(tmp_path, family, model, digits_test):
    module = model
    store.save(module, tmp_path / family, family=family, dataset=digits_test.info, seed=0)
    loaded, meta = store.load(tmp_path / family)
    assert type(loaded) is type(module) and not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(digits_test.x), module(digits_test.x))
    assert meta.family == family and meta.arch == json.loads(json.dumps(module.arch))
    assert meta.classes == [str(i) for i in range(10)] and meta.input_shape == [1, 8, 8]


def test_metadata_from_train_record(tmp_path):
    module, rec = models.train("linear", "digits", epochs=1)
    store.save(module, tmp_path, record=rec, extra={"note": "x"})
    doc = json.loads((tmp_path / "model.json").read_text())
    assert doc["family"] == "linear" and doc["params"]["epochs"] == 1 and doc["seed"] == 0
    assert doc["dataset"] == "digits" and doc["format_version"] == store.FORMAT_VERSION
    assert doc["metrics"]["test_accuracy"] == rec.test_accuracy
    assert doc["extra"] == {"device": rec.device, "note": "x"}
    assert {"robustkit", "torch", "scikit-learn"} <= set(doc["versions"])
    blob = (tmp_path / "model.safetensors").read_bytes()
    import hashlib

    assert doc["tensors"]["sha256"] == hashlib.sha256(blob).hexdigest()


def test_several_named_groups_in_one_folder(tmp_path, digits_train):
    lin, mlp = small("linear", digits_train), small("mlp", digits_train)
    store.save(lin, tmp_path, family="linear")
    store.save(mlp, tmp_path, family="mlp", name="detector")
    store.save_tensors(tmp_path, "uap", {"v": torch.full((1, 8, 8), 0.25)}, meta={"xi": 0.3})
    assert store.load(tmp_path)[1].family == "linear"
    assert store.load(tmp_path, name="detector")[1].family == "mlp"
    tensors, meta = store.load_tensors(tmp_path, "uap")
    assert float(tensors["v"].mean()) == 0.25 and meta["xi"] == 0.3
    with pytest.raises(StoreError, match="expected 'module'"):
        store.load(tmp_path, name="uap")


def test_custom_builder_for_unregistered_modules(tmp_path):
    class Head(torch.nn.Module):
        def __init__(self, dim: int) -> None:
            super().__init__()
            self.arch = {"dim": dim}
            self.fc = torch.nn.Linear(dim, 2)

    head = Head(4)
    store.save(head, tmp_path, family="head", name="head")
    with pytest.raises(StoreError, match="unknown model 'head'; valid: .*linear"):
        store.load(tmp_path, name="head")
    loaded, _ = store.load(tmp_path, name="head", build=lambda arch: Head(**arch))
    assert torch.equal(loaded.fc.weight, head.fc.weight)


def plant(directory: Path, name: str, blob: bytes) -> None:
    directory.mkdir(exist_ok=True)
    (directory / name).write_bytes(blob)


class Payload:
    """Unpickling this creates a directory: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_malicious_pickle_under_store_names_executes_nothing(tmp_path, linear_dir):
    # The payload is live: unpickling it does create its marker.
    live = tmp_path / "live-marker"
    pickle.loads(pickle.dumps(Payload(live)))
    assert live.is_dir()

    marker = tmp_path / "marker"
    blob = pickle.dumps(Payload(marker))
    both = tmp_path / "both"
    plant(both, "model.json", blob)
    plant(both, "model.safetensors", blob)
    # A valid JSON whose hash matches the pickle, so the tensor parser itself meets it.
    deep = fresh_copy(linear_dir, tmp_path / "deep")
    doc = json.loads((deep / "model.json").read_text())
    import hashlib

    doc["tensors"]["sha256"] = hashlib.sha256(blob).hexdigest()
    doc["tensors"]["bytes"] = len(blob)
    (deep / "model.json").write_text(json.dumps(doc))
    plant(deep, "model.safetensors", blob)
    torch_zip = tmp_path / "torchzip"
    fresh_copy(deep, torch_zip)
    torch.save(Payload(marker), torch_zip / "model.safetensors")
    doc["tensors"]["sha256"] = hashlib.sha256(
        (torch_zip / "model.safetensors").read_bytes()).hexdigest()
    doc["tensors"]["bytes"] = (torch_zip / "model.safetensors").stat().st_size
    (torch_zip / "model.json").write_text(json.dumps(doc))

    for d, match in ((both, "not JSON"), (deep, "not a valid safetensors"),
                     (torch_zip, "not a valid safetensors")):
        with pytest.raises(StoreError, match=match):
            store.load(d)
    assert not marker.exists()
    assert [e.error is not None for e in store.list_models(tmp_path)] == [True, False, False]


def edit_json(d: Path, **changes) -> None:
    doc = json.loads((d / "model.json").read_text())
    doc.update(changes)
    (d / "model.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("case, match", [
    ("tampered", "SHA-256 does not match"),
    ("truncated tensors", "bytes, model.json records .*truncated"),
    ("truncated json", "not JSON"),
    ("foreign json", "not a robustkit store file"),
    ("format version", "version 99 is not supported"),
    ("unknown family", "unknown model 'quantum'; valid:"),
    ("shape mismatch", "do not match the model: .*linear.weight"),
    ("bad arch", "cannot rebuild 'linear'"),
    ("missing tensors", "no such store file"),
])
def test_bad_files_raise_store_error(tmp_path, linear_dir, case, match):
    d = fresh_copy(linear_dir, tmp_path / "m")
    tensors, js = d / "model.safetensors", d / "model.json"
    if case == "tampered":
        blob = bytearray(tensors.read_bytes())
        blob[-3] ^= 0xFF
        tensors.write_bytes(bytes(blob))
    elif case == "truncated tensors":
        tensors.write_bytes(tensors.read_bytes()[:-100])
    elif case == "truncated json":
        js.write_bytes(js.read_bytes()[:50])
    elif case == "foreign json":
        js.write_text(json.dumps({"family": "linear", "arch": {}}))
    elif case == "format version":
        edit_json(d, format_version=99)
    elif case == "unknown family":
        edit_json(d, family="quantum")
    elif case == "shape mismatch":
        edit_json(d, arch={"input_shape": [1, 8, 8], "n_classes": 3}, classes=["0", "1", "2"])
    elif case == "bad arch":
        edit_json(d, arch={"input_shape": [1, 8, 8], "n_classes": 10, "evil": 1})
    elif case == "missing tensors":
        tensors.unlink()
    with pytest.raises(StoreError, match=match):
        store.load(d)


def test_writes_are_atomic(tmp_path, linear_dir, monkeypatch, digits_train):
    d = fresh_copy(linear_dir, tmp_path / "m")
    before = {f.name: f.read_bytes() for f in d.iterdir()}

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        store.save(small("mlp", digits_train), d, family="mlp")
    assert {f.name: f.read_bytes() for f in d.iterdir()} == before  # no temp files left


def test_bad_save_arguments(tmp_path, digits_train):
    linear = small("linear", digits_train)
    with pytest.raises(TypeError, match="model.arch"):
        store.save(torch.nn.Linear(2, 2), tmp_path, family="linear")
    with pytest.raises(ValueError, match="family is required"):
        store.save(linear, tmp_path)
    with pytest.raises(TypeError, match="not JSON-serializable"):
        store.save(linear, tmp_path, family="linear", extra={"f": object()})
    with pytest.raises(ValueError, match="model name"):
        store.model_dir(tmp_path, "../escape")
    assert not (tmp_path / "model.json").exists()
