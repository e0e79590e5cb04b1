"""Kernel SVM and Gaussian-mixture certificates beside AutoAttack: the bracket
[certified, attacked] and the share of inputs decided exactly.

    python benchmarks/certify_kernels.py                 # digits + 2-D sets
    python benchmarks/certify_kernels.py --only 2d --n 60

Digits (Linf eps 0.02/0.05/0.1, the first ``--n`` stratified test images): the ``svm``
(RBF) and ``gmm`` families with their default parameters, certified by the ``kernel`` and
``gmm`` methods with one bound of the ball (``branch=False``) and with branch and bound
(``--time-limit`` seconds, ``--max-boxes`` open boxes per image), and attacked by
AutoAttack (standard). 2-D moons/xor/blobs (every test point, Linf and L2 eps 0.05/0.1):
the same methods with branch and bound, where every point must be decided.

Columns: ``certified`` (certified accuracy), ``autoattack`` (AutoAttack's robust
accuracy), the bracket [certified, autoattack] in which the true robust accuracy lies,
``exact_share`` (inputs certified, or broken by the certificate's witness or by
AutoAttack: their robustness is known), ``cert_decided`` (certified or broken by the
certificate alone), ``seconds_per_image`` (thread CPU seconds of the certificate per image,
one torch thread). Soundness: a sample certified that AutoAttack breaks raises
``CertificateContradiction`` and stops the benchmark (``check_against_attack``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attacks_common import code_version, cpu_clock
from common import RESULTS, device_name, write_csv

from robustkit import certify, load_dataset, models
from robustkit.attacks.autoattack import autoattack_curve

DIGITS_EPS = (0.02, 0.05, 0.1)
TWO_D_EPS = (0.05, 0.1)
METHOD = {"svm": "kernel", "gmm": "gmm"}


def _clock() -> float:
    return time.thread_time() if cpu_clock() else time.perf_counter()


def rows_for(dataset: str, family: str, x: torch.Tensor, y: torch.Tensor, *, eps: tuple,
             norm: str, branches: tuple[bool, ...], time_limit: float, max_boxes: int,
             model: torch.nn.Module) -> list[dict[str, Any]]:
    """One row per (eps, branch): the certificate beside AutoAttack on the same inputs."""
    t0 = _clock()
    attacks = autoattack_curve(model, x, y, eps=list(eps), norm=norm, version="standard")
    aa_seconds = _clock() - t0
    rows = []
    for branch in branches:
        t0 = _clock()
        results = certify.certify(model, x, y, eps=list(eps), norm=norm,
                                  method=METHOD[family], branch=branch,
                                  time_limit=time_limit, max_boxes=max_boxes)
        seconds = _clock() - t0
        for res, att in zip(results, attacks):  # type: ignore[arg-type]
            certify.check_against_attack(res, att.success, att.x_adv, model=model, x=x, y=y,
                                         what="AutoAttack")
            known = res.certified | res.broken | att.success
            rows.append({
                "dataset": dataset, "model": family, "method": res.method, "norm": norm,
                "eps": res.eps, "branch": branch, "n": len(x),
                "clean_accuracy": round(float((model(x).argmax(1) == y).float().mean()), 6),
                "certified": res.certified_accuracy,
                "autoattack": round(1.0 - float(att.success.float().mean()), 6),
                "exact_share": round(float(known.float().mean()), 6),
                "cert_decided": res.decided_share,
                "unknown": int(res.unknown.sum()),
                "boxes": res.info.get("boxes", ""),
                "seconds_per_image": seconds / len(x) / len(eps),
                "autoattack_seconds_per_image": aa_seconds / len(x) / len(eps),
                "time_limit": time_limit if branch else "", "max_boxes": max_boxes,
                "benchmark": "certify_kernels"})
            print({k: rows[-1][k] for k in ("dataset", "model", "norm", "eps", "branch",
                                            "certified", "autoattack", "exact_share",
                                            "seconds_per_image")}, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("digits", "2d"), default=None)
    ap.add_argument("--n", type=int, default=200, help="digits test images")
    ap.add_argument("--time-limit", type=float, default=1.0, help="seconds per image")
    ap.add_argument("--max-boxes", type=int, default=16, help="open boxes per image (digits)")
    ap.add_argument("--out", default=str(RESULTS / "certify_kernels.csv"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    device = torch.device("cpu")
    meta = {"device": device_name(device), "threads": torch.get_num_threads(),
            "clock": "thread cpu" if cpu_clock() else "wall", "commit": code_version()}
    rows: list[dict[str, Any]] = []
    if args.only in (None, "2d"):
        for name in ("moons", "xor", "blobs"):
            x, y, _ = load_dataset(name, "test")
            for family in ("svm", "gmm"):
                model, _ = models.train(family, name)
                for norm in ("linf", "l2"):
                    rows += rows_for(name, family, x, y, eps=TWO_D_EPS, norm=norm,
                                     branches=(True,), time_limit=args.time_limit,
                                     max_boxes=512, model=model)
                write_csv([{**r, **meta} for r in rows], Path(args.out))  # partial
    if args.only in (None, "digits"):
        x, y, _ = load_dataset("digits", "test", limit=args.n)
        for family in ("svm", "gmm"):
            model, _ = models.train(family, "digits")
            rows += rows_for("digits", family, x, y, eps=DIGITS_EPS, norm="linf",
                             branches=(False, True), time_limit=args.time_limit,
                             max_boxes=args.max_boxes, model=model)
            write_csv([{**r, **meta} for r in rows], Path(args.out))  # partial
    write_csv([{**r, **meta} for r in rows], Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
