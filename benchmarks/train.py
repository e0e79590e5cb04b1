"""Training time and clean accuracy per model family, on digits and on 10,000 MNIST images.

Run: .venv/bin/python benchmarks/train.py [--only digits|mnist] [--device auto]
Writes benchmarks/results/train.csv (one row per configuration, with the device, one torch
thread; ``seconds`` is wall time of the fit, ``cpu_seconds`` the process CPU time of fit and
accuracy passes, the number to compare on a shared machine) and prints a markdown table. MNIST rows need ../shared/datasets/mnist (or
$ROBUSTKIT_DATA with MNIST/raw/); they are skipped with a message otherwise.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
from common import RESULTS, device_name, markdown_table, mnist_root, write_csv

from robustkit import load_dataset, models

DIGITS = [
    ("linear", {"loss": "logistic"}),
    ("linear", {"loss": "hinge"}),
    ("linear", {"loss": "perceptron"}),
    ("svm", {"kernel": "linear"}),
    ("svm", {"kernel": "poly", "degree": 2}),
    ("svm", {"kernel": "poly", "degree": 3}),
    ("svm", {"kernel": "rbf"}),
    ("gmm", {}),
    ("mlp", {}),
    ("cnn", {}),
]
MNIST = [
    ("linear", {"epochs": 20, "lr": 1e-3}),
    ("svm", {"kernel": "rbf"}),
    ("gmm", {"pca": 50, "n_components": 5, "reg": 0.1}),
    ("mlp", {"epochs": 20}),
    ("cnn", {"epochs": 10, "lr": 5e-3}),
]


def run(dataset: str, configs: list, device: torch.device, root=None, limit=None) -> list[dict]:
    rows = []
    tr = load_dataset(dataset, "train", root=root, limit=limit)
    te = load_dataset(dataset, "test", root=root)
    for family, params in configs:
        cpu0 = time.process_time()
        _, rec = models.train(family, (tr, te), device=device, **params)
        cpu = time.process_time() - cpu0  # also counts the two accuracy passes of train()
        row = {"dataset": dataset, "model": family,
               "params": ";".join(f"{k}={v}" for k, v in params.items()) or "defaults",
               "n_train": rec.n_train, "n_test": rec.n_test,
               "train_accuracy": round(rec.train_accuracy, 4),
               "test_accuracy": round(rec.test_accuracy, 4),
               "seconds": round(rec.seconds, 2), "cpu_seconds": round(cpu, 2),
               "threads": torch.get_num_threads(), "device": device_name(device)}
        print(row, flush=True)
        rows.append(row)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", choices=["digits", "mnist"])
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    torch.set_num_threads(1)  # one thread: comparable across families and machines
    device = models.resolve_device(args.device)
    rows: list[dict] = []
    if args.only in (None, "digits"):
        rows += run("digits", DIGITS, device)
    if args.only in (None, "mnist"):
        root = mnist_root()
        if root is None:
            print("MNIST not found: skipping the MNIST rows", file=sys.stderr)
        else:
            rows += run("mnist", MNIST, device, root=root, limit=10_000)
    suffix = "" if args.only is None else f"_{args.only}"
    write_csv(rows, RESULTS / f"train{suffix}.csv")
    print(markdown_table(rows, ["dataset", "model", "params", "test_accuracy", "seconds", "cpu_seconds",
                                "device"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
