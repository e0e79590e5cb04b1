"""The store checks a model's JSON against its tensor file's header before building
anything, refuses inconsistent metadata, and `models list/show` say when a model is broken."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from _fixtures import digits, fitted_model
from click.testing import CliRunner

import robustkit.models
from robustkit import store
from robustkit.cli import main
from robustkit.store import StoreError


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("ws") / "mlp"
    store.save(fitted_model("mlp"), d, family="mlp", dataset=digits("train").info)
    return d


@pytest.fixture()
def copy(saved, tmp_path):
    d = tmp_path / "ws" / "mlp"
    shutil.copytree(saved, d)
    return d


def edit(d, **changes):
    doc = json.loads((d / "model.json").read_text())
    doc.update(changes)
    (d / "model.json").write_text(json.dumps(doc))


def test_huge_arch_is_refused_from_the_header_before_any_real_build(copy, monkeypatch):
    """hidden = [10**7, 10**7] with the tensor file untouched: refused naming the file
    and a mismatching tensor; the builder only ever ran on the meta device."""
    doc = json.loads((copy / "model.json").read_text())
    edit(copy, arch={**doc["arch"], "hidden": [10_000_000, 10_000_000]})
    devices = []
    real = robustkit.models.build

    def spy(family, arch, *rest):
        devices.append(torch.empty(0).device.type)
        return real(family, arch, *rest)

    monkeypatch.setattr(robustkit.models, "build", spy)
    with pytest.raises(StoreError, match=r"mlp/model\.safetensors: tensors do not match the "
                                         r"model: .*net\.0\.weight: stored \(64, 64\) F32, "
                                         r"model \(10000000, 64\)"):
        store.load(copy)
    assert devices == ["meta"]
    with pytest.raises(StoreError, match="do not match the model"):
        store.verify(copy)


def test_untampered_model_loads_and_verifies(copy):
    module, meta = store.load(copy)
    assert store.verify(copy).sha256 == meta.sha256
    x = digits("test").x[:20]
    assert torch.equal(module(x), fitted_model("mlp")(x))


@pytest.mark.parametrize("change, match", [
    ({"classes": ["a", "b", "c"]}, "3 classes listed for a model with 10 outputs"),
    ({"input_shape": [3, 32, 32]}, r"input_shape \[3, 32, 32\] does not match .*\[1, 8, 8\]"),
])
def test_inconsistent_metadata_is_refused_at_load(copy, change, match):
    edit(copy, **change)
    with pytest.raises(StoreError, match=match):
        store.load(copy)
    with pytest.raises(StoreError, match=match):
        store.read_model_meta(copy)


def _break(d, how):
    tensors = d / "model.safetensors"
    if how == "missing":
        tensors.unlink()
    elif how == "truncated":
        tensors.write_bytes(tensors.read_bytes()[:-64])
    elif how == "replaced":  # same size, other bytes: only the hash sees it
        blob = bytearray(tensors.read_bytes())
        blob[-1] ^= 0xFF
        tensors.write_bytes(bytes(blob))


@pytest.mark.parametrize("how, why", [("missing", "no such store file"),
                                      ("truncated", "truncated"),
                                      ("replaced", "SHA-256 does not match")])
def test_models_list_and_show_report_a_broken_model(copy, how, why):
    ws = copy.parent
    shutil.copytree(copy, ws / "good")
    _break(copy, how)
    res = CliRunner().invoke(main, ["models", "list", "--workdir", str(ws)])
    assert res.exit_code == 0, res.output
    rows = {line.split()[0]: line for line in res.stdout.splitlines()[1:]}
    assert rows["good"].rstrip().endswith("ok")
    assert "broken: " in rows["mlp"] and why in rows["mlp"]
    doc = json.loads(CliRunner().invoke(main, ["models", "list", "--workdir", str(ws),
                                               "--json"]).stdout)
    assert [(r["name"], r["status"] == "ok") for r in doc] == [("good", True), ("mlp", False)]
    show = CliRunner().invoke(main, ["models", "show", "mlp", "--workdir", str(ws)])
    assert show.exit_code == 1 and show.stdout == ""
    assert show.stderr.startswith("error: ") and why in show.stderr
    ok = CliRunner().invoke(main, ["models", "show", "good", "--workdir", str(ws)])
    assert ok.exit_code == 0 and "sha256:" in ok.stdout


def test_replacing_a_model_leaves_nothing_of_the_old_one(tmp_path):
    """defend --defense detector, then --force with another defense under the same name:
    the old detector (which `score` would put in front of the new model) is gone."""
    ws = str(tmp_path)
    base = ["defend", "--model", "linear", "--eps", "0.1", "--name", "m", "--limit", "150",
            "--epochs", "1", "--no-score", "--workdir", ws, "--quiet"]
    assert CliRunner().invoke(main, [*base, "--defense", "detector"]).exit_code == 0
    assert (tmp_path / "m" / "detector.json").is_file()
    (tmp_path / "m" / "score.json").write_text("{}")
    res = CliRunner().invoke(main, [*base, "--defense", "fgsm_rs", "--force"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "model.json", "model.safetensors", "plain.json", "plain.safetensors"]
    res = CliRunner().invoke(main, ["train", "--model", "linear", "--param", "epochs=1",
                                    "--name", "m", "--workdir", ws, "--force", "--quiet"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "model.json", "model.safetensors"]


def test_an_arch_with_a_million_layers_is_refused_before_building(copy, monkeypatch):
    doc = json.loads((copy / "model.json").read_text())
    edit(copy, arch={**doc["arch"], "hidden": [1] * 1_000_000})
    monkeypatch.setattr(robustkit.models, "build", lambda *a: pytest.fail("built"))
    with pytest.raises(StoreError, match="'hidden' lists 1000000 entries for a tensor file "
                                         "holding 6 tensors"):
        store.load(copy)
