"""FGSM where float32 cross-entropy saturates: robustkit's exact-direction step against the
float32 autograd gradient every peer steps along (and torchattacks' FGSM itself when
installed), on the attack benchmark's trained models (digits, and MNIST when present).

    .venv/bin/python benchmarks/attacks_saturation.py

Writes benchmarks/results/attacks_saturation.csv and .md: per model, how many test inputs
have p_y == 1 in float32 (autograd's p_y - 1 is then 0 and the true-class term is lost),
how many FGSM inputs differ from the autograd-sign ones, and FGSM success on the correctly
classified inputs for each.
"""
from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F
from attacks_common import FAMILIES, code_version, load, trained
from attacks_fgsm import EPS, torchattacks_fgsm
from common import RESULTS, device_name, markdown_table, write_csv

from robustkit.attacks.fgsm import fgsm

OUT = RESULTS / "attacks_saturation.csv"


def autograd_fgsm(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                  eps: float) -> torch.Tensor:
    """FGSM along the sign of autograd's float32 cross-entropy gradient."""
    xg = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)
    return (x + eps * g.sign()).clamp(0, 1)


def rows_for(dataset: str, device: torch.device) -> list[dict]:
    data = load(dataset)
    if data is None:
        return []
    x, y, eps = data.test.x.to(device), data.test.y.to(device), EPS[dataset]
    out = []
    for family in FAMILIES:
        model = trained(data, family).to(device).eval()
        ours = fgsm(model, x, y, eps=eps, predict=False).x_adv
        auto = autograd_fgsm(model, x, y, eps)
        advs = {"robustkit": ours, "float32 autograd": auto}
        if (atk := torchattacks_fgsm(model, eps, x.device)) is not None:
            advs["torchattacks"] = atk(x, y)
        with torch.no_grad():
            logits = model(x)
            ok = logits.argmax(1) == y
            saturated = int((logits.softmax(1).gather(1, y[:, None]) == 1).sum())
            success = {k: round(float((model(v).argmax(1) != y)[ok].float().mean()), 4)
                       for k, v in advs.items()}
        differ = int((ours != auto).flatten(1).any(1).sum())
        out.append({"device": device_name(device), "commit": code_version(),
                    "dataset": dataset, "model": family, "eps": eps, "n": len(y),
                    "n_correct": int(ok.sum()), "p_y_is_1": saturated,
                    "inputs_differing": differ,
                    **{f"success {k}": v for k, v in success.items()}})
        print(out[-1], flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(1)
    device = torch.device(args.device)
    rows = [r for ds in ("digits", "mnist") for r in rows_for(ds, device)]
    write_csv(rows, OUT)
    cols = [c for c in rows[0] if c not in ("device", "commit")]
    meta = sorted({(r["device"], r["commit"]) for r in rows})
    (RESULTS / "attacks_saturation.md").write_text(
        markdown_table(rows, cols) + "\n\nMeasured on: "
        + "; ".join(f"{d}, commit {c}" for d, c in meta) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
