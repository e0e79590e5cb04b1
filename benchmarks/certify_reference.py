"""robustkit's IBP and CROWN margin bounds against auto_LiRPA's on the same nets and inputs.

Run: .venv/bin/python benchmarks/certify_reference.py [--n 50]
         [--lirpa-python /work/venvs/lirpa/bin/python]
Writes benchmarks/results/certify_reference.csv: per model, norm, eps, method and
auto_LiRPA configuration (see benchmarks/lirpa_bounds.py), the largest absolute and relative
difference of the N x (K-1) lower bounds of ``logit_y - logit_j``, the smallest
``ours - reference`` (negative: ours looser), their relation, pass at 1e-4 where both
sides compute the same bounds (see ``compare``), and both sides' process CPU
milliseconds for the same bounds (the best of 3, alpha-CROWN once, one torch thread,
float64; auto_LiRPA timed in its own process the same way). ``--models`` reruns some nets
and keeps the CSV's rows of the others (their ``commit`` column says what measured them).
Exits 2 when the auto_LiRPA environment is missing.

auto_LiRPA 0.7.1 needs torch < 2.9: it runs in a throw-away environment, never a robustkit
dependency. To build it (Python 3.11, PyPI only; the torch wheel pulls its CUDA libraries,
~6 GB, even for CPU use):

    python3 -m venv /work/venvs/lirpa
    /work/venvs/lirpa/bin/pip install "torch==2.8.*" "torchvision==0.23.*" safetensors \
        packaging appdirs pyyaml tqdm graphviz wheel
    # auto_LiRPA's source (github.com/Verified-Intelligence/auto_LiRPA, 0.7.1), with the
    # pytest pin dropped from its setup.py:
    /work/venvs/lirpa/bin/pip install --no-deps --no-build-isolation ./auto_LiRPA

The Linf ball is cut to the [0, 1] box on both sides. auto_LiRPA's L2 ignores the box, so
the L2 rows use the inputs mapped to [0.25, 0.75] with eps <= 0.25, where the box is
inactive and the two problems are the same (one more L2 row, eps 0.5 on the digits
themselves, where the box binds: there robustkit's bounds may only be tighter); robustkit's IBP under L2 starts from the ball's bounding box (auto_LiRPA's
from the ball), so IBP is compared under Linf only.
"""
from __future__ import annotations

import argparse
import csv
import sys

import torch
from certify_linear import setup
from certify_networks import build as build_mlp
from common import RESULTS, best_cpu, write_csv
from lirpa_bridge import DEFAULT_PYTHON, MissingReference, check_python, lirpa_bounds
from torch import nn

from robustkit import load_dataset, models
from robustkit.certify.alpha import alpha_margins
from robustkit.certify.bounds import ibp_margins
from robustkit.certify.crown import margin_bounds, preactivation_bounds
from robustkit.certify.dense import network
from robustkit.certify.layers import ops_of

LINF = ("ibp", "crown", "alpha-crown")
CASES = [{"norm": "linf", "eps": e, "x": "x", "methods": LINF} for e in (0.01, 0.05, 0.1)] + \
        [{"norm": "l2", "eps": e, "x": "x_mid", "methods": ("crown",)} for e in (0.1, 0.25)] + \
        [{"norm": "l2", "eps": 0.5, "x": "x", "methods": ("crown",)}]  # the box binds
MODELS = ("mlp default", "mlp 128-128 default", "mlp ibp eps 0.1", "cnn default",
          "cnn bn-avgpool")


def pooled_cnn(x: torch.Tensor, y: torch.Tensor, epochs: int = 15) -> nn.Sequential:
    """Conv-BatchNorm-ReLU-AvgPool-Flatten-Linear-ReLU-Linear, trained briefly (Adam)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 16, 64), nn.ReLU(),
                        nn.Linear(64, 10))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    return net.eval()


def build(name: str) -> nn.Module:
    """The nets of the comparison: the CNNs here, the MLPs as certify_networks builds them."""
    if name == "cnn default":
        return models.train("cnn", "digits", device="cpu")[0]
    if name == "cnn bn-avgpool":
        tr = load_dataset("digits", "train", seed=0)
        return pooled_cnn(tr.x, tr.y)
    return build_mlp(name)


def ours(model: nn.Module, x: torch.Tensor, y: torch.Tensor, case: dict, method: str
         ) -> torch.Tensor:
    """robustkit's lower bounds (N, K-1), computed as ``certify`` computes them."""
    x0 = x.double()
    with torch.no_grad():
        if method == "ibp":
            return ibp_margins(ops_of(model), x0, y, case["eps"])
        layers = network(ops_of(model), tuple(x.shape[1:]))
        flat = x0.flatten(1)
        bounds = preactivation_bounds(layers, flat, case["eps"], case["norm"])
        fn = alpha_margins if method == "alpha-crown" else margin_bounds
        return fn(layers, bounds, flat, y, case["eps"], case["norm"])


def compare(a: torch.Tensor, ref: torch.Tensor, same: bool) -> dict:
    """Differences of ours from the reference's bounds. ``same``: both sides compute the
    same bounds, and pass means equal within 1e-4. Otherwise (auto_LiRPA's defaults, which
    intersect nothing with IBP; an L2 ball where the box binds, which auto_LiRPA ignores;
    alpha-CROWN, two optimizers) there is no bar, only the relation: the tighter hidden
    bounds are usually, not always, tighter margins (CROWN's adaptive slopes can flip)."""
    diff = a - ref
    rel = diff.abs() / ref.abs().clamp_min(1e-12)
    worst, low = float(diff.abs().max()), float(diff.min())
    relation = ("equal" if worst <= 1e-4 else "ours looser" if float(diff.max()) < -1e-4
                else "ours tighter" if low >= -1e-4 else "mixed")
    return {"max_abs_diff": worst, "max_rel_diff": float(rel.max()), "min_ours_minus_ref": low,
            "mean_ours_minus_ref": float(diff.mean()), "relation": relation,
            "pass_1e-4": ("yes" if relation == "equal" else "no") if same else ""}


def rows_for(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, python: str
             ) -> list[dict]:
    inputs = {"x": x, "x_mid": 0.25 + 0.5 * x}
    cases = [{**c, "methods": [m for m in c["methods"]  # alpha-CROWN: the MLPs only (CPU)
                               if m != "alpha-crown" or name.startswith("mlp")]} for c in CASES]
    ref, meta = lirpa_bounds(python, model, inputs, y, cases)
    rows = []
    for i, case in enumerate(cases):
        xi = inputs[case["x"]]
        for method in case["methods"]:
            t, mine = best_cpu(lambda m=method, xi=xi, case=case: ours(model, xi, y, case, m),
                               1 if method == "alpha-crown" else 3)
            configs = {"ibp": ("default",), "crown": ("default", "matched"),
                       "alpha-crown": ("matched",)}[method]
            for config in configs:
                key = f"{i}/{config}/{method}"
                same = (config, method) in (("default", "ibp"), ("matched", "crown")) and \
                    (case["norm"], case["x"]) != ("l2", "x")
                rows.append({"model": name, "norm": case["norm"], "eps": case["eps"],
                             "inputs": "digits" if case["x"] == "x" else "0.25+0.5*digits",
                             "method": method, "lirpa_config": config, "n": len(x),
                             "bounds": mine.numel(), **compare(mine, ref[key], same),
                             "robustkit_ms": round(t * 1e3, 2),
                             "lirpa_ms": round(meta["seconds"][key] * 1e3, 2),
                             "lirpa_version": meta["auto_LiRPA"],
                             "lirpa_torch": meta["torch"], "torch": torch.__version__})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--lirpa-python", default=DEFAULT_PYTHON)
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    args = ap.parse_args()
    try:
        check_python(args.lirpa_python)
    except MissingReference as exc:
        print(f"certify_reference: {exc}", file=sys.stderr)
        return 2
    x, y, machine = setup(args.n)
    path = RESULTS / "certify_reference.csv"
    kept = [r for r in csv.DictReader(path.open())
            if r["model"] not in args.models] if path.exists() else []  # rows not rerun
    rows: list[dict] = []
    for name in args.models:
        rows += [{**r, **machine} for r in rows_for(name, build(name), x, y, args.lirpa_python)]
        for r in rows[-9:]:
            print(r, file=sys.stderr, flush=True)
        write_csv(sorted(kept + rows, key=lambda r: MODELS.index(r["model"])), path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
