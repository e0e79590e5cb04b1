"""auto_LiRPA's IBP and CROWN margin bounds of an exported network (the reference side of
benchmarks/certify_reference.py).

Runs in the throw-away auto_LiRPA environment, never in robustkit's (it imports neither
robustkit nor anything robustkit installs beyond torch and safetensors):

    /work/venvs/lirpa/bin/python benchmarks/lirpa_bounds.py DIR [--repeats 3]

DIR holds what benchmarks/lirpa_bridge.py wrote: ``net.json`` (the layer list and input
shape), ``net.safetensors`` (float64 weights), ``cases.json`` (one entry per bound:
norm, eps, which inputs) and ``inputs.safetensors`` (x tensors and labels y). It writes
``bounds.safetensors`` (the lower bound of logit_y - logit_j, classes j != y in order, per
case, method and configuration) and ``bounds.json`` (versions and the CPU seconds of
each bound, the best of ``--repeats`` runs (alpha-CROWN: one) of process CPU time, one torch thread, no
autograd but for alpha-CROWN). A case's ``methods`` (default ibp and crown) may add
``alpha-crown`` (auto_LiRPA's "CROWN-Optimized" with its default 20 steps, matched options
only).

Configurations:
  default  auto_LiRPA's defaults: CROWN bounds only the ReLU inputs that IBP finds
           unstable, IBP the others; nothing intersected.
  matched  every intermediate neuron bounded by CROWN and intersected with IBP
           (``sparse_intermediate_bounds=False, compare_crown_with_ibp=True``, and a layer
           on the input by CROWN too: see ``first_layers``): the bounds robustkit's
           ``crown`` computes.
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch
from common import best_cpu
from safetensors.torch import load_file, save_file
from torch import nn

CONFIGS = {"default": {},
           "matched": {"sparse_intermediate_bounds": False, "compare_crown_with_ibp": True}}
METHODS = {"ibp": "IBP", "crown": "backward", "alpha-crown": "CROWN-Optimized"}


def build(spec: list[dict], weights: dict[str, torch.Tensor]) -> nn.Sequential:
    """The exported layer list as an eval-mode float64 nn.Sequential."""
    layers: list[nn.Module] = []
    for i, layer in enumerate(spec):
        kind = layer["kind"]
        if kind == "linear":
            w = weights[f"{i}.weight"]
            m: nn.Module = nn.Linear(w.shape[1], w.shape[0])
        elif kind == "conv2d":
            w = weights[f"{i}.weight"]
            m = nn.Conv2d(w.shape[1] * layer["groups"], w.shape[0], tuple(w.shape[2:]),
                          stride=layer["stride"], padding=layer["padding"],
                          dilation=layer["dilation"], groups=layer["groups"],
                          bias=f"{i}.bias" in weights)
        elif kind == "batchnorm2d":
            m = nn.BatchNorm2d(len(weights[f"{i}.running_mean"]), eps=layer["eps"])
        elif kind == "avgpool2d":
            m = nn.AvgPool2d(layer["kernel_size"], layer["stride"], layer["padding"])
        elif kind == "relu":
            m = nn.ReLU()
        elif kind == "flatten":
            m = nn.Flatten()
        else:
            raise ValueError(f"layer kind {kind!r}")
        layers.append(m)
    net = nn.Sequential(*layers).double()  # before loading: float64 weights stay float64
    missing, unexpected = net.load_state_dict(weights, strict=False)
    if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
        raise ValueError(f"weights do not fit the layers: {missing} {unexpected}")
    return net.eval()


def margin_spec(y: torch.Tensor, k: int) -> torch.Tensor:
    """C (N, K-1, K): rows e_y - e_j for the classes j != y, in order."""
    eye = torch.eye(k, dtype=torch.float64)
    idx = torch.arange(k).expand(len(y), k)
    others = idx[idx != y[:, None]].reshape(len(y), k - 1)
    return eye[y][:, None, :] - eye[others]


def perturbation(x: torch.Tensor, norm: str, eps: float):
    from auto_LiRPA import PerturbationLpNorm

    if norm == "linf":  # the Linf ball cut to the [0, 1] box, as robustkit does
        return PerturbationLpNorm(norm=float("inf"), eps=eps, x_L=(x - eps).clamp(0, 1),
                                  x_U=(x + eps).clamp(0, 1))
    return PerturbationLpNorm(norm=2, eps=eps)  # auto_LiRPA's L2 ignores any box


def first_layers(model) -> dict[str, list[str]]:
    """{node: [input]} for the Linear/Conv nodes that read the input directly: asking for
    their A matrices makes auto_LiRPA bound them by CROWN (exact) instead of by IBP, whose
    L2 bound of a convolution takes the whole kernel's norm at every position, also where
    zero padding cuts it (looser than exact at the borders)."""
    return {n.name: [n.inputs[0].name] for n in model.nodes()
            if type(n).__name__ in ("BoundLinear", "BoundConv")
            and type(n.inputs[0]).__name__ == "BoundInput"}


def main() -> None:
    import auto_LiRPA
    from auto_LiRPA import BoundedModule, BoundedTensor

    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)  # alpha-CROWN's best-bound buffers follow it
    net = build(json.loads((args.dir / "net.json").read_text())["layers"],
                load_file(str(args.dir / "net.safetensors")))
    inputs = load_file(str(args.dir / "inputs.safetensors"))
    cases = json.loads((args.dir / "cases.json").read_text())
    y = inputs["y"]
    c = margin_spec(y, int(net(inputs[cases[0]["x"]][:1]).shape[1]))
    out, seconds = {}, {}
    for config, opts in CONFIGS.items():
        bounded: dict[str, BoundedModule] = {}
        for i, case in enumerate(cases):
            x = inputs[case["x"]]
            if case["x"] not in bounded:
                bounded[case["x"]] = BoundedModule(net, torch.zeros_like(x), bound_opts=opts,
                                                   device="cpu")
            model = bounded[case["x"]]
            for name in case.get("methods", ("ibp", "crown")):
                method = METHODS[name]
                if (config, name) in (("matched", "ibp"), ("default", "alpha-crown")):
                    continue  # IBP has no options here; alpha-CROWN on the matched bounds
                kw = {"return_A": True, "needed_A_dict": first_layers(model)} \
                    if config == "matched" and method == "backward" else {}

                def run(model=model, x=x, method=method, case=case, kw=kw) -> torch.Tensor:
                    bx = BoundedTensor(x, perturbation(x, case["norm"], case["eps"]))
                    with torch.set_grad_enabled(method == "CROWN-Optimized"):
                        return model.compute_bounds(x=(bx,), C=c, method=method,
                                                    bound_upper=False, **kw)[0]
                t, lower = best_cpu(run, 1 if name == "alpha-crown" else args.repeats)
                key = f"{i}/{config}/{name}"
                out[key], seconds[key] = lower.detach().contiguous(), t
    save_file(out, str(args.dir / "bounds.safetensors"))
    meta = {"seconds": seconds, "torch": torch.__version__,
            "auto_LiRPA": auto_LiRPA.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads()}
    (args.dir / "bounds.json").write_text(json.dumps(meta, indent=1))


if __name__ == "__main__":
    main()
