"""ONNX import: onnx2torch module vs onnxruntime, the store round trip, the CLI and attacks."""
from __future__ import annotations

import hashlib
import io
import json
import warnings

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from robustkit import load_dataset, store
from robustkit.cli import main

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx2torch")
from robustkit.models.onnx_model import check_onnxruntime, from_onnx


def _export(net: nn.Module, shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo (which needs onnxscript).
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (torch.rand(2, *shape),), buf, input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "n"}},
                          dynamo=False)
    return buf.getvalue()


@pytest.fixture(scope="module")
def cnn_onnx():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(4 * 4 * 4, 16), nn.Tanh(), nn.Linear(16, 10))
    return net, _export(net, (1, 8, 8))


def test_converted_module_matches_onnxruntime_and_torch(cnn_onnx):
    net, data = cnn_onnx
    model = from_onnx(data, [1, 8, 8])
    x = load_dataset("digits", "test", seed=0).x[:64]
    assert check_onnxruntime(model, x) <= 1e-5
    torch.testing.assert_close(model(x), net(x), atol=1e-5, rtol=1e-5)
    assert model.arch["n_classes"] == 10 and model.arch["input_shape"] == [1, 8, 8]


def test_converted_module_is_differentiable(cnn_onnx):
    net, data = cnn_onnx
    model = from_onnx(data, [1, 8, 8])
    x = load_dataset("digits", "test", seed=0).x[:4].clone().requires_grad_(True)
    g, = torch.autograd.grad(model(x)[:, 3].sum(), x)
    x2 = x.detach().clone().requires_grad_(True)
    g_ref, = torch.autograd.grad(net(x2)[:, 3].sum(), x2)
    torch.testing.assert_close(g, g_ref, atol=1e-5, rtol=1e-4)


def test_flat_graph_takes_image_inputs():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(64, 10))
    model = from_onnx(_export(net, (64,)), [1, 8, 8])
    x = torch.rand(5, 1, 8, 8)
    torch.testing.assert_close(model(x), net(x.reshape(5, 64)), atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        from_onnx(_export(net, (64,)), [1, 28, 28])


def test_cli_import_then_attack_and_tamper_detection(tmp_path, cnn_onnx):
    _, data = cnn_onnx
    path = tmp_path / "net.onnx"
    path.write_bytes(data)
    ws = tmp_path / "ws"
    res = CliRunner().invoke(main, ["import", "onnx", str(path), "--name", "net", "--dataset",
                                    "digits", "--workdir", str(ws), "--json"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)
    assert rec["check_value"] <= 1e-5
    module, meta = store.load(ws / "net")
    x = load_dataset("digits", "test", seed=0).x[:8]
    torch.testing.assert_close(module(x), from_onnx(data, [1, 8, 8])(x))
    assert meta.family == "onnx" and meta.arch["graph_sha256"] == hashlib.sha256(data).hexdigest()
    res = CliRunner().invoke(main, ["attack", "--model", "net", "--attack", "pgd", "--eps", "0.1",
                                    "--limit", "30", "--param", "steps=3", "--workdir", str(ws),
                                    "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    graph = ws / "net" / "model.onnx"
    graph.write_bytes(graph.read_bytes()[:-1] + b"\x00")
    with pytest.raises(store.StoreError, match="SHA-256"):
        store.load(ws / "net")


def test_garbage_onnx_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"not a graph")
    res = CliRunner().invoke(main, ["import", "onnx", str(path), "--name", "bad", "--dataset",
                                    "digits", "--workdir", str(tmp_path / "ws")])
    assert res.exit_code == 1 and "cannot convert the ONNX graph" in res.output
