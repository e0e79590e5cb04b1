"""Square on flat and small inputs: robustkit's Square vs torchattacks' Square (the reference
implementation of the paper's schedule) over many seeds, Linf, 5,000 queries.

Tasks: breast-cancer (30 features, 2 classes; scikit-learn's bundled copy, min-max scaled
on its train split) under a GMM and an MLP at eps 0.1, and the 8x8 digits (1 channel)
under the GMM and the MLP at eps 0.05. torchattacks' Square takes images (N, C, H, W):
flat rows go in as (N, 1, 1, D) (its square of side round(sqrt(p * D)) then covers a run of
that many features, as robustkit's flat window does). Per seed: the share of
the correctly classified test samples each breaks; per task and method, the samples some
seed broke (``seed`` = "any of N") and how many of them no seed of the other method broke
(``only_this_method``). Output:
benchmarks/results/attacks_square_flat.csv (one row per task, method and seed).

Run: .venv/bin/python benchmarks/attacks_square_flat.py --seeds 10
"""
from __future__ import annotations

import argparse
import time

import torch
from attacks_common import code_version, cpu_clock, trained
from attacks_common import load as load_bench
from common import RESULTS, device_name, write_csv
from torch import nn

from robustkit import models
from robustkit.attacks.square import square

OUT = RESULTS / "attacks_square_flat.csv"


def breast_cancer() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    xs, ys = load_breast_cancer(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(xs, ys, test_size=0.25, random_state=0,
                                          stratify=ys)
    lo, hi = xtr.min(0), xtr.max(0)
    scale = lambda a: ((a - lo) / (hi - lo)).clip(0, 1)
    return (torch.tensor(scale(xtr), dtype=torch.float32), torch.tensor(ytr),
            torch.tensor(scale(xte), dtype=torch.float32), torch.tensor(yte))


class As4d(nn.Module):
    """The model on (N, 1, 1, D) rows (for torchattacks), flattening them back."""

    def __init__(self, model: nn.Module, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.model, self.shape = model, shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.reshape(len(x), *self.shape))


def tasks() -> dict[str, tuple[nn.Module, torch.Tensor, torch.Tensor, float]]:
    xtr, ytr, xte, yte = breast_cancer()
    out = {}
    for fam in ("gmm", "mlp"):
        model = models.create(fam).fit(xtr, ytr, n_classes=2, seed=0).eval()
        out[f"breast-cancer {fam}"] = (model, xte, yte, 0.1)
    data = load_bench("digits")
    assert data is not None
    for fam in ("gmm", "mlp"):
        out[f"digits {fam}"] = (trained(data, fam).eval(), data.test.x, data.test.y, 0.05)
    return out


def reference(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int,
              queries: int) -> torch.Tensor:
    import torchattacks as ta

    flat = x.dim() == 2
    net = As4d(model, tuple(x.shape[1:])) if flat else model
    x4 = x[:, None, None, :] if flat else x
    atk = ta.Square(net, eps=eps, n_queries=queries, seed=seed)
    atk.set_device(x.device)
    out = atk(x4, y).detach().reshape(x.shape)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--queries", type=int, default=5000)
    ap.add_argument("--tasks", nargs="+", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    base = {"device": device_name(torch.device("cpu")), "threads": 1, "commit": code_version(),
            "queries": args.queries, "clock": "thread cpu" if cpu_clock() else "wall"}
    for name, (model, x, y, eps) in tasks().items():
        if args.tasks and not any(t in name for t in args.tasks):
            continue
        with torch.no_grad():
            keep = model(x).argmax(1) == y
        x, y = x[keep], y[keep]
        union: dict[str, torch.Tensor] = {}
        for seed in range(args.seeds):
            for method in ("robustkit square", "torchattacks square"):
                t0 = time.thread_time()
                if method == "robustkit square":
                    x_adv = square(model, x, y, eps=eps, queries=args.queries, seed=seed).x_adv
                else:
                    x_adv = reference(model, x, y, eps, seed, args.queries)
                seconds = time.thread_time() - t0
                linf = float((x_adv - x).abs().amax())
                with torch.no_grad():
                    broken = model(x_adv).argmax(1) != y
                union[method] = union.get(method, torch.zeros_like(broken)) | broken
                rows.append({"task": name, "eps": eps, "n": len(x), "method": method,
                             "seed": seed, "success_rate": round(float(broken.double().mean()), 4),
                             "broken": int(broken.sum()), "linf_max": round(linf, 6),
                             "seconds": round(seconds, 2), **base})
                print(rows[-1], flush=True)
        for method, hit in union.items():
            others = [u for m, u in union.items() if m != method]
            only = hit & ~others[0] if others else hit
            rows.append({"task": name, "eps": eps, "n": len(x), "method": method,
                         "seed": f"any of {args.seeds}", "broken": int(hit.sum()),
                         "success_rate": round(float(hit.double().mean()), 4),
                         "only_this_method": int(only.sum()), **base})
            print(rows[-1], flush=True)
    write_csv(rows, OUT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
