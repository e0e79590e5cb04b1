"""Property-based tests of the store (issue 12): random byte flips and JSON edits of a saved
small model either load with identical logits or raise a clear error (StoreError, or
ValueError/TypeError); never another exception type, never a silently different model."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robustkit import store
from robustkit.models.mlp import MLP
from robustkit.tensorfiles import StoreError

X = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, torch.Tensor]:
    torch.manual_seed(0)
    model = MLP([1, 4, 4], 3, [6]).eval()
    folder = store.save(model, tmp_path_factory.mktemp("store") / "m", family="mlp",
                        params={"hidden": [6]}, dataset="digits")
    with torch.no_grad():
        return folder, model(X)


def _outcome(folder: Path, logits: torch.Tensor) -> None:
    try:
        model, _ = store.load(folder)
    except (StoreError, ValueError, TypeError) as exc:
        assert str(exc)
        return
    with torch.no_grad():
        assert torch.equal(model(X), logits), "a changed file loaded as a different model"


def _copy(saved, tmp_path_factory) -> Path:
    src, _ = saved
    dst = tmp_path_factory.mktemp("edit") / "m"
    shutil.copytree(src, dst)
    return dst


@settings(derandomize=True, max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(file=st.sampled_from(["model.safetensors", "model.json"]),
       flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
                      min_size=1, max_size=4),
       truncate=st.booleans())
def test_byte_flips_load_identically_or_fail_clearly(saved, tmp_path_factory, file, flips,
                                                     truncate):
    folder = _copy(saved, tmp_path_factory)
    path = folder / file
    data = bytearray(path.read_bytes())
    for where, mask in flips:
        data[int(where * len(data))] ^= mask
    if truncate:
        data = data[: int(flips[0][0] * len(data))]
    path.write_bytes(bytes(data))
    _outcome(folder, saved[1])


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=False),
              st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=6)


def _paths(doc, prefix=()):
    """Every (path, value) in a JSON document."""
    yield prefix, doc
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*prefix, i))


@settings(derandomize=True, max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_json_edits_load_identically_or_fail_clearly(saved, tmp_path_factory, data):
    folder = _copy(saved, tmp_path_factory)
    path = folder / "model.json"
    doc = json.loads(path.read_text())
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p, _ in _paths(doc) if p]
        where = data.draw(st.sampled_from(paths))
        parent = doc
        for key in where[:-1]:
            parent = parent[key]
        if data.draw(st.booleans()):
            parent[where[-1]] = data.draw(json_values)
        elif isinstance(parent, dict):
            del parent[where[-1]]
        else:
            parent.pop(where[-1])
    path.write_text(json.dumps(doc))
    _outcome(folder, saved[1])
