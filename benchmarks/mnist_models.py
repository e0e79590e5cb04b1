"""Train the MNIST models the AutoAttack, shard and certificate benchmarks read from
``--model-dir`` (full 60,000-image training split, 1 torch thread, seed 0), each saved with
``robustkit.store.save`` under OUT/NAME:

    cnn-fgsm_rs   FGSM-RS CNN (Wong et al. 2020: eps 0.3, alpha 0.375, 10 epochs, Adam,
                  cyclic lr peaking at 5e-3, batch 100, eps warm-up over 20%)
    cnn-pgd       PGD-AT CNN (eps 0.3, 10 steps of 0.04, eps warm-up over 30%, the same
                  schedule for 5 epochs); the AutoAttack benchmark names its rows cnn-pgd-5ep
    cnn-ibp-0.1   IBP-trained CNN for eps 0.1 (Gowal et al. 2018: train eps 2x, kappa 0.5,
                  5% warm-up, 50% ramp; 20 epochs, Adam 1e-3, cosine)
    mlp-pgd-0.1   PGD-trained MLP 784-100-100-10 (the shape of Salman et al.'s MLP-B) at
                  eps 0.1, 10 steps, 10 epochs, Adam 1e-3, cosine

Run:
    ROBUSTKIT_DATA=ROOT .venv/bin/python benchmarks/mnist_models.py --out DIR [NAME ...]
ROOT holds MNIST/raw (the four original files). CPU seconds measured for these settings:
cnn-fgsm_rs 103 s, cnn-pgd about 6 minutes, cnn-ibp-0.1 445 s, mlp-pgd-0.1 95 s.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import torch

from robustkit import defenses, store
from robustkit.data import load_dataset

WONG = {"batch_size": 100, "lr": 5e-3, "schedule": "cyclic"}
PLAN: dict[str, tuple[str, str, dict[str, Any], dict[str, Any]]] = {
    "cnn-fgsm_rs": ("fgsm_rs", "cnn", {**WONG, "epochs": 10},
                    {"eps": 0.3, "alpha": 0.375, "eps_warmup": 0.2}),
    "cnn-pgd": ("pgd", "cnn", {**WONG, "epochs": 5},
                {"eps": 0.3, "steps": 10, "step_size": 0.04, "eps_warmup": 0.3}),
    "cnn-ibp-0.1": ("ibp", "cnn", {"epochs": 20, "batch_size": 100, "lr": 1e-3,
                                   "schedule": "cosine"},
                    {"eps": 0.1, "kappa": 0.5, "warmup": 0.05, "ramp": 0.5,
                     "train_eps_factor": 2.0}),
    "mlp-pgd-0.1": ("pgd", "mlp", {"hidden": [100, 100], "epochs": 10, "batch_size": 100,
                                   "lr": 1e-3, "schedule": "cosine"},
                    {"eps": 0.1, "steps": 10}),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for the models")
    ap.add_argument("names", nargs="*", help=f"default: all of {', '.join(PLAN)}")
    args = ap.parse_args()
    unknown = sorted(set(args.names) - set(PLAN))
    if unknown:
        ap.error(f"unknown model {', '.join(unknown)}; choose from {', '.join(PLAN)}")
    root = os.environ.get("ROBUSTKIT_DATA")
    if not root:
        raise SystemExit("set ROBUSTKIT_DATA to the folder holding MNIST/raw")
    torch.set_num_threads(1)
    train = load_dataset("mnist", "train", root=root)
    for name in args.names or list(PLAN):
        defense, family, model_params, params = PLAN[name]
        t0 = time.process_time()
        res = defenses.defend(defense, family, train.x, train.y, model_params=model_params,
                              n_classes=10, seed=0, **params)
        store.save(res.model, Path(args.out) / name, family=family,
                   params={**model_params, **params, "defense": defense}, dataset="mnist",
                   seed=0)
        print(f"{name}: {time.process_time() - t0:.0f} CPU s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
