"""ReLU-network certificates on digits: IBP, CROWN and MILP against AutoAttack.

Run: .venv/bin/python benchmarks/certify_networks.py [--part bars|hard|bigm|cost] [--n 100]
     ROBUSTKIT_DATA=... .venv/bin/python benchmarks/certify_networks.py --part mnist-cnn
         --n 1000 --model-dir DIR  (mnist-mlp likewise; see certify_mnist.py)
Writes benchmarks/results/certify_networks_PART.csv (a row per model, eps and big-M source;
the part "cost" writes certify_cost.csv). One torch thread, one HiGHS thread; the MILP's
time limit is CPU seconds of the process per input (a loaded machine stretches the wall
time, not the limit). Every row checks every certified
input against AutoAttack (a contradiction raises).

Parts:
  bars  default digits MLP (one hidden layer of 256) at eps 0.01, 0.02, an IBP-trained one
        (trained at eps 0.1) at 0.05, 0.1: the bar is exact on >= 95% within 30 s per input.
  hard  default and PGD-trained (eps 0.1) MLPs at eps 0.05, 0.1 (run with --n 30
        --time-limit 5 for the committed CSV).
  bigm  an MLP with two hidden layers of 128, where CROWN tightens the second layer's
        big-M constants over IBP's (with one hidden layer both are exact): MILP with each.
  cost  IBP and CROWN time over one forward + backward pass of the same batch, beside
        auto_LiRPA's time for the same bounds (its own process, timed the same way;
        left out when its environment, --lirpa-python, is missing).
  mnist-cnn, mnist-mlp  the MNIST rows (benchmarks/certify_mnist.py): an IBP-trained CNN
        beside Gowal et al.'s verified error, a PGD-trained MLP beside Salman et al.'s
        MILP vs LP table; written to certify_networks_mnist_cnn.csv / _mlp.csv.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from certify_linear import setup
from certify_mnist import cnn_row, mlp_row
from common import RESULTS, best_cpu, write_csv
from lirpa_bridge import DEFAULT_PYTHON, MissingReference, check_python, lirpa_bounds

from robustkit import load_dataset, models
from robustkit.attacks.autoattack import autoattack
from robustkit.certify import certify, check_against_attack
from robustkit.certify.bounds import ibp_margins
from robustkit.certify.crown import margin_bounds, preactivation_bounds
from robustkit.certify.dense import network
from robustkit.certify.layers import ops_of
from robustkit.defenses import defend

PARTS = {
    "bars": [("mlp default", (0.01, 0.02)), ("mlp ibp eps 0.1", (0.05, 0.1))],
    "hard": [("mlp default", (0.05, 0.1)), ("mlp pgd eps 0.1", (0.05, 0.1))],
    "bigm": [("mlp 128-128 default", (0.01, 0.02))],
}


def build(name: str) -> torch.nn.Module:
    tr = load_dataset("digits", "train", seed=0)
    if name == "mlp default":
        return models.train("mlp", "digits", device="cpu")[0]
    if name == "mlp 128-128 default":
        return models.train("mlp", "digits", device="cpu", hidden=[128, 128])[0]
    if name == "mlp ibp eps 0.1":
        return defend("ibp", "mlp", tr.x, tr.y, eps=0.1).model
    if name == "mlp pgd eps 0.1":
        return defend("pgd", "mlp", tr.x, tr.y, eps=0.1).model
    raise ValueError(name)


def row(name: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
        bounds: str, time_limit: float) -> dict:
    ibp = certify(model, x, y, eps=eps, method="ibp", attack_steps=0)
    crown = certify(model, x, y, eps=eps, method="crown", attack_steps=0)
    start = time.process_time()
    exact = certify(model, x, y, eps=eps, method="milp", bounds=bounds, time_limit=time_limit)
    cpu = time.process_time() - start
    aa = autoattack(model, x, y, eps=eps, version="standard")
    for r in (ibp, crown, exact):  # a certified input that AutoAttack breaks raises
        check_against_attack(r, aa.success, aa.x_adv, model=model, x=x, y=y, what="AutoAttack")
    solve = exact.info["solve_seconds"]
    solved = solve[solve > 0]
    unstable = exact.info["unstable"].float()
    timeouts = sum("time limit" in r for r in exact.reasons)
    return {
        "model": name, "eps": eps, "n": len(x), "bounds": bounds, "time_limit_s": time_limit,
        "clean_accuracy": round(float((model(x).argmax(1) == y).float().mean()), 4),
        "ibp_certified": ibp.certified_accuracy, "crown_certified": crown.certified_accuracy,
        "milp_certified": exact.certified_accuracy,
        "autoattack_robust": round(1 - float(aa.success.float().mean()), 4),
        "exact_share": exact.decided_share, "timeouts": timeouts,
        "milp_solved_inputs": len(solved),
        "solve_s_median": round(float(solved.median()), 3) if len(solved) else 0.0,
        "solve_s_max": round(float(solve.max()), 3),
        "seconds_per_input": round(float(exact.seconds.mean()), 3),
        "cpu_s_total": round(cpu, 1),
        "unstable_mean": round(float(unstable.mean()), 1),
        "unstable_max": int(unstable.max()),
        "bar_exact_95": ("yes" if exact.decided_share >= 0.95 else "no")
        if name in ("mlp default", "mlp ibp eps 0.1") and
        (eps in (0.01, 0.02)) == (name == "mlp default") else "",
    }


def cost_rows(x: torch.Tensor, y: torch.Tensor, lirpa: str | None, repeats: int = 15
              ) -> list[dict]:
    rows = []
    for name, fam in (("mlp default", "mlp"), ("cnn default", "cnn")):
        model = models.train(fam, "digits", device="cpu")[0]

        def floor(model: torch.nn.Module = model) -> None:
            xr = x.clone().requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(model(xr), y)
            torch.autograd.grad(loss, xr)

        base = best_cpu(floor, repeats)[0]
        ops = ops_of(model)
        layers = network(ops, tuple(x.shape[1:]))
        x0 = x.double()
        bound_only = {
            "ibp": lambda ops=ops, x0=x0: ibp_margins(ops, x0, y, 0.02),
            "crown": lambda layers=layers, x0=x0: margin_bounds(
                layers, preactivation_bounds(layers, x0.flatten(1), 0.02, "linf"),
                x0.flatten(1), y, 0.02, "linf")}
        ref, meta = lirpa_bounds(lirpa, model, {"x": x}, y, [
            {"norm": "linf", "eps": 0.02, "x": "x"}], repeats) if lirpa else ({}, {})
        for method in ("ibp", "crown"):
            t = best_cpu(lambda m=method, model=model: certify(
                model, x, y, eps=0.02, method=m, attack_steps=0), repeats)[0]
            with torch.no_grad():
                t_bound, ours = best_cpu(bound_only[method], repeats)
            row = {"model": name, "method": method, "n": len(x),
                   "floor_ms": round(base * 1e3, 3), "method_ms": round(t * 1e3, 3),
                   "ratio_to_floor": round(t / base, 1), "bounds_ms": round(t_bound * 1e3, 3),
                   "bounds_ratio": round(t_bound / base, 1)}
            if meta:  # the same bounds in auto_LiRPA ("matched"), and its default CROWN
                key = f"0/{'matched' if method == 'crown' else 'default'}/{method}"
                t_ref = meta["seconds"][key]
                row.update({"lirpa_ms": round(t_ref * 1e3, 3),
                            "max_abs_diff": float((ours - ref[key]).abs().max()),
                            "lirpa_ratio": round(t_ref / base, 1),
                            "lirpa_default_ms": round(meta["seconds"][f"0/default/{method}"]
                                                      * 1e3, 3),
                            "lirpa_version": meta["auto_LiRPA"], "lirpa_torch": meta["torch"]})
            rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=[*PARTS, "cost", "mnist-cnn", "mnist-mlp"],
                    required=True)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--time-limit", type=float, default=30.0)
    ap.add_argument("--model-dir", type=Path,
                    default=RESULTS.parents[1] / "runs" / "mnist-models",
                    help="models trained by benchmarks/mnist_models.py")
    ap.add_argument("--crown-n", type=int, default=200, help="mnist-cnn: CROWN inputs")
    ap.add_argument("--lirpa-python", default=DEFAULT_PYTHON,
                    help="auto_LiRPA's environment for the cost part's reference timings")
    args = ap.parse_args()
    x, y, machine = setup(args.n)
    if args.part.startswith("mnist"):
        row = (cnn_row(args.model_dir, args.n, args.crown_n, args.time_limit)
               if args.part == "mnist-cnn" else mlp_row(args.model_dir, args.n, args.time_limit))
        print(row, file=sys.stderr, flush=True)
        name = args.part.replace("-", "_")
        write_csv([{**row, **machine}], RESULTS / f"certify_networks_{name}.csv")
        return
    if args.part == "cost":
        try:
            check_python(args.lirpa_python)
            lirpa: str | None = args.lirpa_python
        except MissingReference as exc:
            print(f"no auto_LiRPA columns: {exc}", file=sys.stderr)
            lirpa = None
        write_csv([{**r, **machine} for r in cost_rows(x, y, lirpa)],
                  RESULTS / "certify_cost.csv")
        return
    path = RESULTS / f"certify_networks_{args.part}.csv"
    rows = []
    for name, eps_list in PARTS[args.part]:
        model = build(name)
        for eps in eps_list:
            for bounds in ("crown", "ibp") if args.part == "bigm" else ("crown",):
                rows.append({**row(name, model, x, y, eps, bounds, args.time_limit), **machine})
                print(rows[-1], file=sys.stderr, flush=True)
                write_csv(rows, path)


if __name__ == "__main__":
    main()
