"""robustkit's side of the auto_LiRPA comparison: export a network, run
benchmarks/lirpa_bounds.py in the auto_LiRPA environment, read its bounds back.

Nothing crosses the process boundary but JSON and safetensors files in a temporary
directory (no pickle). auto_LiRPA is never a robustkit dependency: it lives in a
throw-away environment (``--lirpa-python``, by default /work/venvs/lirpa/bin/python).
"""
from __future__ import annotations

import copy
import json
import subprocess
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from robustkit.models.cnn import CNN
from robustkit.models.mlp import MLP

HERE = Path(__file__).resolve().parent
DEFAULT_PYTHON = "/work/venvs/lirpa/bin/python"


class MissingReference(RuntimeError):
    """The auto_LiRPA environment is absent or cannot import auto_LiRPA."""


def check_python(python: str) -> str:
    """auto_LiRPA's version in the environment of ``python``, or MissingReference."""
    if not Path(python).exists():
        raise MissingReference(f"no auto_LiRPA environment at {python} (build it as "
                               "benchmarks/certify_reference.py says, or pass --lirpa-python)")
    done = subprocess.run([python, "-c", "import auto_LiRPA; print(auto_LiRPA.__version__)"],
                          check=False, capture_output=True, text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        raise MissingReference(f"{python} cannot import auto_LiRPA: {last}")
    return done.stdout.strip()


def sequential(model: nn.Module) -> nn.Sequential:
    """The model as a float64 nn.Sequential of plain torch layers (an MLP's
    standardization folded into its first Linear); the model itself is left unchanged."""
    model = copy.deepcopy(model)
    if isinstance(model, MLP):
        layers = [m for m in model.net]
        first = nn.Linear(layers[0].in_features, layers[0].out_features).double()
        scale, mean = model.standardize.scale.double(), model.standardize.mean.double()
        w = layers[0].weight.double() / scale
        with torch.no_grad():
            first.weight.copy_(w)
            first.bias.copy_(layers[0].bias.double() - w @ mean)
        return nn.Sequential(nn.Flatten(), first, *layers[1:]).double().eval()
    if isinstance(model, CNN):
        return nn.Sequential(*model.features, *model.head).double().eval()
    if isinstance(model, nn.Sequential):
        return model.double().eval()
    raise TypeError(f"no export for {type(model).__name__}")


def _layer(m: nn.Module) -> dict:
    if isinstance(m, nn.Linear):
        return {"kind": "linear"}
    if isinstance(m, nn.Conv2d):
        return {"kind": "conv2d", "stride": list(m.stride), "padding": list(m.padding),
                "dilation": list(m.dilation), "groups": m.groups}
    if isinstance(m, nn.BatchNorm2d):
        return {"kind": "batchnorm2d", "eps": m.eps}
    if isinstance(m, nn.AvgPool2d):
        return {"kind": "avgpool2d", "kernel_size": m.kernel_size, "stride": m.stride,
                "padding": m.padding}
    if isinstance(m, nn.ReLU):
        return {"kind": "relu"}
    if isinstance(m, nn.Flatten):
        return {"kind": "flatten"}
    raise TypeError(f"no export for layer {type(m).__name__}")


def export(net: nn.Sequential, out: Path) -> None:
    """net.json (layer list) and net.safetensors (float64 state, keys ``i.name``)."""
    layers = [_layer(m) for m in net]
    state = {f"{i}.{k}": v.detach().double().contiguous() for i, m in enumerate(net)
             for k, v in m.state_dict().items() if k != "num_batches_tracked"}
    (out / "net.json").write_text(json.dumps({"layers": layers}))
    save_file(state, str(out / "net.safetensors"))


def lirpa_bounds(python: str, model: nn.Module, inputs: dict[str, torch.Tensor],
                 y: torch.Tensor, cases: list[dict], repeats: int = 3
                 ) -> tuple[dict[str, torch.Tensor], dict]:
    """auto_LiRPA's lower bounds of the margins for each case ({"norm", "eps", "x": key of
    inputs}): ({"i/config/method": (N, K-1)}, {"seconds": {...}, versions})."""
    with tempfile.TemporaryDirectory(prefix="robustkit-lirpa-") as tmp:
        d = Path(tmp)
        export(sequential(model), d)
        save_file({**{k: v.double().contiguous() for k, v in inputs.items()}, "y": y.long()},
                  str(d / "inputs.safetensors"))
        (d / "cases.json").write_text(json.dumps(cases))
        done = subprocess.run([python, str(HERE / "lirpa_bounds.py"), str(d),
                               "--repeats", str(repeats)], check=False, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"lirpa_bounds.py failed: {done.stderr.strip()[-2000:]}")
        return load_file(str(d / "bounds.safetensors")), json.loads((d / "bounds.json").read_text())
