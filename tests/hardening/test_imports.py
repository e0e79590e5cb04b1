"""Issue 21, defects 1-8 and 12: bring-your-own imports that lost a model, stored NaN or
probabilities as healthy logits, or ended in a raw PyTorch/onnx error or the wrong exit
code. Each test failed before its fix."""
from __future__ import annotations

import io
import json
import pickle
import warnings

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from torch import nn

from robustkit import store
from robustkit.cli import main

DIGITS = ("--dataset", "digits")


def _run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def _import_torch(builder: str, weights, ws, *extra: str, name: str = "m"):
    return _run("import", "torch", builder, weights, "--name", name, *DIGITS,
                "--workdir", ws, *extra)


def _one_line(res) -> str:
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1, res.output
    assert "Traceback" not in res.output
    return lines[0]


# 1. An import never silently replaces a stored model.

def test_import_refuses_to_replace_a_trained_model_without_force(tmp_path, nets, weights):
    ws = tmp_path / "ws"
    res = _run("train", "--model", "linear", "--param", "epochs=1", "--name", "m",
               "--workdir", ws, "--quiet")
    assert res.exit_code == 0, res.output
    before = (ws / "m" / "model.json").read_bytes()
    res = _import_torch(f"{nets}:net", weights, ws)
    assert res.exit_code == 1
    assert "already exists" in _one_line(res) and "--force" in res.output
    assert (ws / "m" / "model.json").read_bytes() == before
    assert store.read_model_meta(ws / "m").family == "linear"
    res = _import_torch(f"{nets}:net", weights, ws, "--force")
    assert res.exit_code == 0, res.output
    assert store.read_model_meta(ws / "m").family == "torch"
    assert sorted(p.name for p in (ws / "m").iterdir()) == ["model.json", "model.safetensors"]


def test_existing_name_is_refused_before_the_file_is_read(tmp_path, nets, weights):
    ws = tmp_path / "ws"
    assert _import_torch(f"{nets}:net", weights, ws).exit_code == 0
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a graph")
    for kind in ("onnx", "sklearn"):
        res = _run("import", kind, junk, "--name", "m", *DIGITS, "--workdir", ws)
        assert res.exit_code == 1 and "already exists" in _one_line(res), res.output
    assert store.read_model_meta(ws / "m").family == "torch"


def test_a_failed_forced_import_keeps_the_old_model(tmp_path, nets, weights, nan_weights):
    ws = tmp_path / "ws"
    assert _import_torch(f"{nets}:net", weights, ws).exit_code == 0
    res = _import_torch(f"{nets}:net", nan_weights, ws, "--force")
    assert res.exit_code == 1
    _module, meta = store.load(ws / "m")
    assert meta.extra["source"] == str(weights)


# 3. NaN weights or NaN outputs are refused.

def test_nan_weights_are_refused_naming_the_tensor(tmp_path, nets, nan_weights):
    res = _import_torch(f"{nets}:net", nan_weights, tmp_path / "ws")
    assert res.exit_code == 1
    line = _one_line(res)
    assert "'1.bias'" in line and "non-finite" in line and str(nan_weights) in line
    assert not (tmp_path / "ws" / "m").exists()


def test_nan_outputs_are_refused(tmp_path, nets, weights):
    res = _import_torch(f"{nets}:nan_net", weights, tmp_path / "ws")
    assert res.exit_code == 1
    assert "non-finite" in _one_line(res) and "digits" in res.output
    assert not (tmp_path / "ws" / "m").exists()


# 4. Probabilities are refused with a hint, or converted to log-probabilities on request.

def test_softmax_outputs_are_refused_with_the_hint(tmp_path, nets, weights):
    res = _import_torch(f"{nets}:softmax_net", weights, tmp_path / "ws")
    assert res.exit_code == 1
    line = _one_line(res)
    assert "probabilities" in line and "--outputs probabilities" in line and "logits" in line
    assert not (tmp_path / "ws" / "m").exists()


def test_outputs_probabilities_stores_log_probabilities(tmp_path, nets, weights):
    import importlib

    ws = tmp_path / "ws"
    res = _import_torch(f"{nets}:softmax_net", weights, ws, "--outputs", "probabilities")
    assert res.exit_code == 0, res.output
    module, meta = store.load(ws / "m")
    assert meta.arch["outputs"] == "probabilities"
    x = torch.rand(7, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ref = importlib.import_module(nets).log_softmax_net()
    ref.load_state_dict(load_file(tmp_path / "w.safetensors"))
    with torch.no_grad():
        torch.testing.assert_close(module(x), ref(x), atol=1e-6, rtol=1e-5)
    # The option on outputs that are not probabilities is refused.
    res = _import_torch(f"{nets}:net", weights, ws, "--outputs", "probabilities",
                        name="n")
    assert res.exit_code == 1 and "not probabilities" in _one_line(res)


def test_log_softmax_outputs_are_logits(tmp_path, nets, weights):
    assert _import_torch(f"{nets}:log_softmax_net", weights, tmp_path / "ws").exit_code == 0


# 5. Outputs that are not (N, n_classes).

@pytest.mark.parametrize(("builder", "shape"), [("scalar_net", "()"), ("flat_net", "(N,)")])
def test_scalar_and_flat_outputs_name_the_shape(tmp_path, nets, weights, builder, shape):
    res = _import_torch(f"{nets}:{builder}", weights, tmp_path / "ws")
    assert res.exit_code == 1
    line = _one_line(res)
    assert "(N, n_classes)" in line and shape in line and "tuple index" not in line


# 7. Weight files that are not safetensors.

@pytest.mark.parametrize("kind", ["pickle", "torch.save", "truncated"])
def test_non_safetensors_weights_name_the_file(tmp_path, nets, weights, kind):
    bad = tmp_path / f"{kind}.safetensors"
    if kind == "pickle":
        bad.write_bytes(pickle.dumps({"1.bias": [0.0] * 10}))
    elif kind == "torch.save":
        torch.save(load_file(weights), bad)
    else:
        bad.write_bytes(weights.read_bytes()[:40])
    res = _import_torch(f"{nets}:net", bad, tmp_path / "ws")
    assert res.exit_code == 1
    line = _one_line(res)
    assert str(bad) in line and "not a safetensors file" in line
    assert "save_file" in line and "header too large" not in line


# 8. State-dict mismatches: one line, the detail under --debug.

def test_state_mismatch_is_one_line_naming_key_and_shapes(tmp_path, nets):
    from safetensors.torch import save_file

    bad = tmp_path / "small.safetensors"
    save_file({"1.weight": torch.zeros(10, 32), "1.bias": torch.zeros(10)}, bad)
    res = _import_torch(f"{nets}:net", bad, tmp_path / "ws")
    assert res.exit_code == 1
    line = _one_line(res)
    assert str(bad) in line and f"{nets}:net" in line and "'1.weight'" in line
    assert "(10, 32)" in line and "(10, 64)" in line
    res = _run("--debug", "import", "torch", f"{nets}:net", bad, "--name", "m", *DIGITS,
               "--workdir", tmp_path / "ws")
    assert res.exit_code != 0 and "size mismatch" in "".join(
        __import__("traceback").format_exception(res.exception))


# 12. Usage errors exit 2 before anything is read.

@pytest.mark.parametrize(("args", "hint"), [
    (("--dataset", "digitz"), "--dataset"),
    (("--dataset", "folder:nowhere,size=0"), "size"),
    (("--dataset", "folder:nowhere,size=-3"), "size"),
    (("--dataset", "folder:nowhere,size=abc"), "size"),
    (("--dataset", "folder:nowhere,channels=2"), "channels"),
    (("--name", "../escape"), "--name"),
])
def test_usage_errors_exit_2_before_reading(tmp_path, args, hint, monkeypatch):
    from robustkit import importing

    def never(*a, **k):
        raise AssertionError("a file or dataset was read")

    monkeypatch.setattr(importing, "load_dataset", never)
    junk = tmp_path / "junk.skops"
    junk.write_bytes(b"x")
    opts = dict(zip(("--name", "--dataset"), ("m", "digits")))
    opts.update(dict(zip(args[::2], args[1::2])))
    flat = [v for kv in opts.items() for v in kv]
    for kind in ("sklearn", "onnx"):
        res = _run("import", kind, junk, *flat, "--workdir", tmp_path / "ws")
        assert res.exit_code == 2, res.output
        assert hint in res.output


def test_builder_without_colon_is_a_usage_error(tmp_path, weights):
    res = _import_torch("mynets", weights, tmp_path / "ws")
    assert res.exit_code == 2 and "module:function" in res.output


# 5 and 6 for ONNX graphs.

onnx_tests = pytest.importorskip("onnx")  # the byom extra, part of the test install


def _export(net: nn.Module, args: tuple[torch.Tensor, ...], names: list[str],
            dynamic: bool = True) -> bytes:
    buf = io.BytesIO()
    axes = {n: {0: "n"} for n in names} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation
        torch.onnx.export(net.eval(), args, buf, input_names=names, dynamic_axes=axes,
                          dynamo=False)
    return buf.getvalue()


class _Two(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor, input_2: torch.Tensor) -> torch.Tensor:
        return self.fc(x) + input_2


class _Sum(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x).sum()


def _import_onnx(tmp_path, data: bytes, *extra: str):
    path = tmp_path / "g.onnx"
    path.write_bytes(data)
    return _run("import", "onnx", path, "--name", "g", *DIGITS, "--workdir", tmp_path / "ws",
                *extra)


def test_two_input_graph_names_its_inputs(tmp_path):
    data = _export(_Two(), (torch.rand(2, 64), torch.rand(2, 10)), ["x", "input_2"])
    res = _import_onnx(tmp_path, data)
    assert res.exit_code == 1
    line = _one_line(res)
    assert "exactly one input" in line and "'x'" in line and "'input_2'" in line


def test_scalar_output_graph_names_the_shape(tmp_path):
    res = _import_onnx(tmp_path, _export(_Sum(), (torch.rand(2, 64),), ["x"]))
    assert res.exit_code == 1
    line = _one_line(res)
    assert "(N, n_classes)" in line and "()" in line


def test_softmax_graph_is_refused_then_converted(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 10), nn.Softmax(dim=1))
    data = _export(net, (torch.rand(2, 64),), ["x"])
    res = _import_onnx(tmp_path, data)
    assert res.exit_code == 1 and "--outputs probabilities" in _one_line(res)
    res = _import_onnx(tmp_path, data, "--outputs", "probabilities", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["kind"] == "onnx"
    module, _meta = store.load(tmp_path / "ws" / "g")
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(module(x), net[0](x.reshape(5, 64)).log_softmax(1),
                                   atol=1e-5, rtol=1e-5)


def test_fixed_batch_graph_is_refused_with_the_export_hint(tmp_path):
    # Found while trying the paths: onnxruntime's raw "Got invalid dimensions" before.
    res = _import_onnx(tmp_path, _export(nn.Linear(64, 10), (torch.rand(2, 64),), ["x"],
                                         dynamic=False))
    assert res.exit_code == 1
    line = _one_line(res)
    assert "fixed batch size of 2" in line and "dynamic_axes" in line


def test_flat_graph_on_image_data_loads_after_import(tmp_path):
    # Found while trying the paths: imported, then every load refused "input_shape [1, 8,
    # 8] does not match the input shape [64] of its arch".
    torch.manual_seed(0)
    net = nn.Linear(64, 10)
    assert _import_onnx(tmp_path, _export(net, (torch.rand(2, 64),), ["x"])).exit_code == 0
    module, meta = store.load(tmp_path / "ws" / "g")
    assert meta.input_shape == [1, 8, 8] and meta.arch["graph_shape"] == [64]
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(module(x), net(x.reshape(3, 64)), atol=1e-5, rtol=1e-5)


def test_sgd_with_the_logistic_loss_imports(tmp_path):
    # Found by test_property_imports: sklearn >= 1.3 keeps the loss as
    # sklearn._loss._loss.CyHalfBinomialLoss, which the trusted list refused.
    import skops.io as sio
    from sklearn.linear_model import SGDClassifier

    from robustkit import load_dataset

    tr = load_dataset("digits", "train", seed=0, limit=300)
    x, y = tr.x.reshape(len(tr.x), -1).double().numpy(), tr.y.numpy()
    est = SGDClassifier(loss="log_loss", random_state=0, max_iter=50, tol=None).fit(x, y)
    sio.dump(est, tmp_path / "sgd.skops")
    res = _run("import", "sklearn", tmp_path / "sgd.skops", "--name", "sgd", *DIGITS,
               "--workdir", tmp_path / "ws")
    assert res.exit_code == 0, res.output
    module, _ = store.load(tmp_path / "ws" / "sgd")
    te = load_dataset("digits", "test", seed=0)
    got = module(te.x.double()).argmax(1).numpy()
    assert (got == est.predict(te.x.reshape(len(te.x), -1).double().numpy())).all()


def test_integer_weights_for_float_parameters_are_refused(tmp_path, nets, weights):
    # A header edited from F32 to I32 (same byte count) loaded, silently cast, as garbage.
    from safetensors.torch import save_file

    state = {k: v.view(torch.int32) for k, v in load_file(weights).items()}
    bad = tmp_path / "int.safetensors"
    save_file(state, bad)
    res = _import_torch(f"{nets}:net", bad, tmp_path / "ws")
    assert res.exit_code == 1
    line = _one_line(res)
    assert "int32 in the file, float32 in the network" in line


def test_forced_torch_import_over_an_onnx_import_leaves_no_graph(tmp_path, nets, weights):
    assert _import_onnx(tmp_path, _export(nn.Linear(64, 10), (torch.rand(2, 64),),
                                          ["x"])).exit_code == 0
    res = _import_torch(f"{nets}:net", weights, tmp_path / "ws", "--force", name="g")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "ws" / "g").iterdir()) == [
        "model.json", "model.safetensors"]
