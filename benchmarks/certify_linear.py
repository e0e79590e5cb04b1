"""The exact certificate of linear models on digits against AutoAttack, FAB and DeepFool.

Run: .venv/bin/python benchmarks/certify_linear.py [--n 450] [--only radius]
Writes benchmarks/results/certify_linear.csv (certified accuracy vs AutoAttack's robust
accuracy per model, norm and eps, with the samples on which they disagree) and
certify_linear_radius.csv (the exact minimal distance vs the distance FAB and DeepFool
find, on every clean-correct input they break; ``box_inactive`` counts the inputs whose
minimum does not touch the [0, 1] box: none on digits, whose background pixels sit at 0).
"""
from __future__ import annotations

import argparse

import torch
from attacks_common import code_version
from common import RESULTS, device_name, write_csv

from robustkit import load_dataset, models
from robustkit.attacks.autoattack import autoattack
from robustkit.attacks.deepfool import deepfool
from robustkit.attacks.fab import fab
from robustkit.certify import certify, check_against_attack
from robustkit.certify.dense import network
from robustkit.certify.layers import ops_of
from robustkit.certify.linear import pair_margins

MODELS = [("linear logistic", "linear", {"loss": "logistic"}),
          ("linear hinge", "linear", {"loss": "hinge"}),
          ("svm linear", "svm", {"kernel": "linear"})]
EPS = {"linf": (0.05, 0.1, 0.2), "l2": (0.05, 0.1, 0.2, 0.5, 1.0)}


def box_free_radius(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str
                    ) -> torch.Tensor:
    """The minimal distance to the decision boundary ignoring the [0, 1] box (N,)."""
    (w, b), = network(ops_of(model), tuple(x.shape[1:]))
    a, c, _ = pair_margins(w, b, y)
    m = (a * x.flatten(1).double()[:, None, :]).sum(-1) + c
    dual = a.abs().sum(-1) if norm == "linf" else torch.linalg.vector_norm(a, dim=-1)
    return (m / dual).amin(1)


def radius_rows(name: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
                ) -> list[dict]:
    rows = []
    for norm in ("linf", "l2"):
        exact = certify(model, x, y, eps=0.0, norm=norm, method="linear").radius
        free = box_free_radius(model, x, y, norm)
        inactive = (exact > 0) & ((exact - free).abs() <= 1e-9 * free.abs().clamp_min(1e-12))
        found = [("fab", fab(model, x, y, norm=norm, steps=100))]
        if norm == "l2":
            found.append(("deepfool", deepfool(model, x, y)))
        for attack, r in found:
            dist = (r.linf if norm == "linf" else r.l2).double()
            ok = (exact > 0) & r.success
            diff = dist[ok] - exact[ok]
            rows.append({
                "model": name, "norm": norm, "attack": attack, "n": len(x),
                "box_inactive": int(inactive.sum()), "compared": int(ok.sum()),
                "max_abs_diff": float(diff.abs().max()) if len(diff) else float("nan"),
                "median_abs_diff": float(diff.abs().median()) if len(diff) else float("nan"),
                "within_1e-4": float((diff.abs() <= 1e-4).float().mean()) if len(diff) else 0.0,
                "attack_below_exact": int((diff < -1e-6).sum()),
            })
    return rows


def setup(n: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """One torch thread; the first n digits test inputs and labels; the machine columns."""
    torch.set_num_threads(1)
    te = load_dataset("digits", "test", seed=0)
    return te.x[:n], te.y[:n], {"device": device_name(torch.device("cpu")), "threads": 1,
                                "commit": code_version()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=450)
    ap.add_argument("--only", choices=["radius"], default=None)
    args = ap.parse_args()
    x, y, machine = setup(args.n)
    rows, radii = [], []
    for name, family, params in MODELS:
        model = models.train(family, "digits", device="cpu", **params)[0]
        for norm, eps_list in EPS.items() if args.only is None else ():
            for r in certify(model, x, y, eps=list(eps_list), norm=norm, method="linear"):
                aa = autoattack(model, x, y, eps=r.eps, norm=norm, version="standard")
                check_against_attack(r, aa.success, aa.x_adv, model=model, x=x, y=y,
                                     what="AutoAttack")
                rows.append({"model": name, "norm": norm, "eps": r.eps, "n": len(x),
                             "certified": r.certified_accuracy,
                             "autoattack_robust": round(1 - float(aa.success.float().mean()), 6),
                             "disagree": int((r.certified == aa.success).sum()),
                             "decided": r.decided_share,
                             "certify_ms": round(float(r.seconds.sum()) * 1e3, 2), **machine})
                print(rows[-1], flush=True)
        radii += [{**r, **machine} for r in radius_rows(name, model, x, y)]
        if rows:
            write_csv(rows, RESULTS / "certify_linear.csv")
        write_csv(radii, RESULTS / "certify_linear_radius.csv")


if __name__ == "__main__":
    main()
