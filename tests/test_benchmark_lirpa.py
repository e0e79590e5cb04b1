"""The auto_LiRPA comparison's plumbing, without auto_LiRPA: a net exported by
benchmarks/lirpa_bridge.py and rebuilt by benchmarks/lirpa_bounds.py computes the model's
margins, and the benchmark exits 2 with a clear line when the environment is missing."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_exported_net_rebuilds_to_the_same_function(fitted, tmp_path) -> None:
    from _fixtures import digits

    bridge, side = _load("lirpa_bridge"), _load("lirpa_bounds")
    x = digits("test").x[:16]
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4),
                              torch.nn.ReLU(), torch.nn.AvgPool2d(2), torch.nn.Flatten(),
                              torch.nn.Linear(64, 10))
    net[1].running_mean.uniform_(-0.5, 0.5)
    net[1].running_var.uniform_(0.5, 2.0)
    for model in (fitted("mlp"), fitted("cnn"), net.eval()):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        bridge.export(bridge.sequential(model), tmp_path)
        rebuilt = side.build(json.loads((tmp_path / "net.json").read_text())["layers"],
                             load_file(str(tmp_path / "net.safetensors")))
        with torch.no_grad():
            want = model(x).double()
            got = rebuilt(x.double())
        torch.testing.assert_close(got - got[:, :1], want - want[:, :1], rtol=0, atol=1e-4)
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_reference_benchmark_exits_2_without_its_environment(tmp_path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "certify_reference.py"),
                           "--lirpa-python", str(tmp_path / "absent" / "python")],
                          capture_output=True, text=True, check=False, cwd=ROOT)
    assert done.returncode == 2
    assert "no auto_LiRPA environment" in done.stderr and "--lirpa-python" in done.stderr
