"""Model selection for MNIST fgsm_rs without touching the test set.

Trains on 55,000 MNIST training images and scores PGD-40 (step 0.01, one random start)
at eps 0.3 on the other 5,000 (a seeded split, the same for every run), then appends one
row per run to benchmarks/results/defenses_selection.csv. Each argument is one run as
JSON: the defense parameters plus ``model_params``, ``seed`` and ``eps`` (training eps).

    .venv/bin/python benchmarks/defenses_select.py \\
        '{"model_params": {"epochs": 10, "batch_size": 100, "lr": 5e-3, "schedule": "cyclic"},
          "eps": 0.35, "alpha": 0.4375, "eps_warmup": 0.2, "seed": 1}'
"""
from __future__ import annotations

import csv
import json
import sys
import time

import torch
from common import RESULTS, mnist_root

from robustkit import load_dataset
from robustkit.attacks.pgd import pgd
from robustkit.defenses import defend

OUT = RESULTS / "defenses_selection.csv"
COLS = ("seed", "train_eps", "model_params", "defense_params", "val_clean", "val_pgd40",
        "seconds", "catastrophic_overfitting", "recoveries", "best_epoch", "stopped_epoch",
        "watch_pgd_accuracy")


def main(argv: list[str]) -> int:
    torch.set_num_threads(1)
    root = mnist_root()
    if root is None:
        print("MNIST not found", file=sys.stderr)
        return 1
    ds = load_dataset("mnist", "train", root=root)
    perm = torch.randperm(len(ds.y), generator=torch.Generator().manual_seed(99))
    val, fit = perm[:5000], perm[5000:].sort().values
    for spec in argv:
        v = json.loads(spec)
        seed, eps, mp = v.pop("seed", 0), v.pop("eps", 0.3), v.pop("model_params")
        t0 = time.perf_counter()
        res = defend("fgsm_rs", "cnn", ds.x[fit], ds.y[fit], eps=eps, model_params=mp,
                     seed=seed, **v)
        secs = time.perf_counter() - t0
        m, xv, yv = res.model.eval(), ds.x[val], ds.y[val]
        with torch.no_grad():
            clean = float((m(xv).argmax(1) == yv).float().mean())
        r = pgd(m, xv, yv, eps=0.3, steps=40, step_size=0.01, random_start=True, seed=1)
        row = {"seed": seed, "train_eps": eps, "model_params": json.dumps(mp),
               "defense_params": json.dumps(v), "val_clean": round(clean, 4),
               "val_pgd40": round(float((r.pred == yv).float().mean()), 4),
               "seconds": round(secs, 1), **{k: res.info.get(k) for k in (
                   "catastrophic_overfitting", "recoveries", "best_epoch", "stopped_epoch")},
               "watch_pgd_accuracy": json.dumps([round(h.get("watch_pgd_accuracy", 0), 3)
                                                 for h in res.history])}
        print(row, flush=True)
        new = not OUT.is_file()
        with open(OUT, "a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=COLS)
            if new:
                w.writeheader()
            w.writerow(row)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
