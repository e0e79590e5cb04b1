"""Attack speed and quality against ART, foolbox and torchattacks, measured in one process.

Parts (each in its own ``attacks_<part>.py``, all on digits and on MNIST, models of every
family trained once and cached under runs/bench-attacks/):
    fgsm      FGSM time / (forward + backward of the same batch), robustkit and the peers.
    uap       uap and uap_sgd vs ART UniversalPerturbation: seconds, fooling rate.
    deepfool  batched DeepFool (L2) vs foolbox, ART, torchattacks: seconds, success, L2.
    svm_grad  SVM input gradients vs ART ScikitlearnSVC.class_gradient: time, exactness.

Run everything, or a part / a dataset alone:
    .venv/bin/python benchmarks/attacks.py [--only fgsm|uap|deepfool|svm_grad]
                                           [--dataset digits|mnist] [--threads 1]
Output: benchmarks/results/attacks_<part>.csv per part (a rerun replaces that part's rows
of the datasets it ran, keeps the others), then the combined attacks.csv (all parts, a
``benchmark`` column) and attacks.md (one README table per part), which is also printed.
Every row records the device, torch threads, the clock and the commit measured.

Timing: ratios are taken between methods timed in the same loop, calls interleaved, medians
of several repeats. With one thread on a CPU (the default: the machine is shared) the clock
is the thread's CPU time (``time.thread_time``; BLAS pools limited to one thread too), so
other processes' load does not enter; otherwise wall time after a CUDA synchronize.
The peers (``pip install -e '.[bench]'``) are imported lazily: a missing one loses its rows.
"""
from __future__ import annotations

import argparse
import csv
import sys
from typing import Any

import torch
from attacks_common import code_version, cpu_clock, load
from common import RESULTS, device_name, markdown_table, write_csv

from robustkit import models

PARTS = ("fgsm", "uap", "deepfool", "svm_grad")
DATASETS = ("digits", "mnist")
TABLES: dict[str, list[str]] = {
    "uap": ["dataset", "model", "method", "seconds", "passes", "fooling_rate_val",
            "fooling_rate_fit", "art_seconds_over_these"],
    "deepfool": ["dataset", "model", "method", "n", "seconds", "vs_foolbox", "success_rate",
                 "l2_median"],
    "svm_grad": ["dataset", "model", "method", "classes", "n_sv", "ms_per_sample", "speedup",
                 "max_abs_diff_art", "max_abs_diff_fd"],
}
FGSM_METHODS = ("floor (model only)", "robustkit", "robustkit (predict=True)", "torchattacks",
                "foolbox", "art")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=PARTS)
    ap.add_argument("--dataset", choices=DATASETS)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    device = models.resolve_device(args.device)
    base = {"device": device_name(device), "threads": torch.get_num_threads(),
            "clock": "thread cpu" if cpu_clock() and device.type == "cpu" else "wall",
            "commit": code_version()}
    for part in [args.only] if args.only else PARTS:
        module = __import__(f"attacks_{part}")
        rows, ran = [], []
        for name in [args.dataset] if args.dataset else DATASETS:
            data = load(name)
            if data is not None:
                rows += module.run(data, device, base)
                ran.append(name)
        merge(RESULTS / f"attacks_{part}.csv", rows, ran)
    combined = [r for part in PARTS for r in read(RESULTS / f"attacks_{part}.csv")]
    write_csv(combined, RESULTS / "attacks.csv")
    md = tables(combined)
    (RESULTS / "attacks.md").write_text(md + "\n")
    print(md)
    return 0


def read(path: Any) -> list[dict[str, Any]]:
    """Rows of a results CSV, numbers parsed back ("" stays "")."""
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return [{k: _number(v) for k, v in r.items()} for r in csv.DictReader(fh)]


def merge(path: Any, rows: list[dict[str, Any]], datasets: list[str]) -> None:
    """Replace the rows of ``datasets`` in the part's CSV by ``rows``, keep the others."""
    kept = [r for r in read(path) if r.get("dataset") not in datasets]
    write_csv(kept + rows, path)


def tables(rows: list[dict[str, Any]]) -> str:
    """The README tables: FGSM ratios pivoted by method, the other parts as rows."""
    out = []
    fg = [r for r in rows if r["benchmark"] == "fgsm"]
    if fg:
        out += ["### FGSM time / forward+backward time of the same batch", "",
                markdown_table(_pivot_fgsm(fg), ["dataset", "model", "n", "floor ms",
                                                 *FGSM_METHODS]), ""]
        pair = [{"dataset": r["dataset"], "model": r["model"], "peer": r["method"],
                 "median robustkit/peer": r["robustkit_over_this"],
                 "95% interval": f"[{r['ci_low']}, {r['ci_high']}]",
                 "rounds robustkit faster": r["robustkit_faster_share"],
                 "two-method loop: median": r.get("alone_robustkit_over_this", ""),
                 "two-method loop: 95% interval": f"[{r.get('alone_ci_low', '')}, "
                                                  f"{r.get('alone_ci_high', '')}]"}
                for r in fg if str(r.get("robustkit_over_this", "")) not in ("", "None")]
        if pair:
            out += [("#### FGSM, robustkit vs each peer round by round (ratio < 1: robustkit "
                     "faster; faster for sure when the interval ends below 1)"), "",
                    markdown_table(pair, list(pair[0])), ""]
    titles = {"uap": "Universal perturbations, Linf xi = 0.3 (fooling rate vs clean prediction)",
              "deepfool": "DeepFool L2 (success and median L2 on clean-correct samples)",
              "svm_grad": "RBF-SVM input gradients vs ART ScikitlearnSVC.class_gradient"}
    for part, cols in TABLES.items():
        sel = [{c: r.get(c, "") for c in cols} | {"note": r.get("note", "")}
               for r in rows if r["benchmark"] == part]
        if sel:
            notes = any(r["note"] for r in sel)
            out += [f"### {titles[part]}", "",
                    markdown_table(sel, cols + (["note"] if notes else [])), ""]
    meta = {(r["device"], r["threads"], r["clock"], r["commit"]) for r in rows}
    out += ["Measured on: " + "; ".join(f"{d}, {t} thread(s), {c} clock, commit {v}"
                                        for d, t, c, v in sorted(meta, key=str))]
    return "\n".join(out)


def _pivot_fgsm(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    table: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        t = table.setdefault((r["dataset"], r["model"]), {"dataset": r["dataset"],
                             "model": r["model"], "n": r["n"], "floor ms": ""} | dict.fromkeys(FGSM_METHODS, ""))
        if r["method"] == "floor":
            t["floor ms"] = round(float(r["seconds"]) * 1e3, 3)
        else:
            t[r["method"]] = r["ratio"]
    return list(table.values())


def _number(v: str) -> Any:
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    return v


if __name__ == "__main__":
    sys.exit(main())
