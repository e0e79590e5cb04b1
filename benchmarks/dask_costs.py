"""Where a sharded evaluation on Dask spends its CPU, task by task, against 2 local
processes: the same evaluation (MNIST FGSM-RS CNN or a digits model, AutoAttack) on each
executor, every task run through ``task_costs.measured``.

Per mode: the CPU seconds inside the tasks (thread clock of the thread that ran each task),
each worker process's CPU over the span of its tasks (what the process spent beyond the
tasks: event loop, profiler, (de)serialization), its system CPU and minor page faults, the
bytes pickled per task (besides the job shared once), the torch threads a task saw, the
Dask processes' total CPU, and wall seconds (only meaningful on an idle machine). Modes:
``processes`` (robustkit's ProcessExecutor, 2 workers), ``dask`` (``dask scheduler`` +
``dask worker --nworkers 2 --nthreads 1`` on 127.0.0.1, as a user starts them),
``dask-noprofile`` (Dask's statistical profiler off), ``dask-nomalloc`` (the nanny does not
set ``MALLOC_TRIM_THRESHOLD_=65536``, which turns off glibc's dynamic mmap threshold).

Run:
    .venv/bin/python benchmarks/dask_costs.py --n 100
Output: benchmarks/results/dask_costs.csv (rows replaced per dataset and mode).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import time
from typing import Any

import torch
from attacks_common import code_version, load
from common import RESULTS, device_name, write_csv
from dask_cluster import DaskCluster
from task_costs import Measured

from robustkit import store
from robustkit.evaluate import evaluate_samples
from robustkit.executors import ProcessExecutor

OUT = RESULTS / "dask_costs.csv"
MODEL = RESULTS.parents[1] / "runs" / "mnist-models" / "cnn-fgsm_rs"  # mnist_models.py
NO_MALLOC = {"DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON": repr(
    {"MALLOC_TRIM_THRESHOLD_": None, "OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1,
     "OPENBLAS_NUM_THREADS": 1})}


def run(mode: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
        args: Any) -> tuple[dict[str, Any], Any]:
    cluster = None
    if mode == "processes":
        inner = ProcessExecutor(2, threads=1)
    else:
        cluster = DaskCluster(8797, profile=mode != "dask-noprofile",
                              env=NO_MALLOC if mode == "dask-nomalloc" else None)
        inner = cluster.executor()
    kw = {"eps": args.eps, "batch_size": args.batch_size, "seed": 0, "threads": 1,
          "version": args.version}
    try:
        evaluate_samples(model, "autoattack", x[:2 * args.batch_size], y[:2 * args.batch_size],
                         executor=inner, shard_size=args.batch_size, **kw)  # warm up
        ex = Measured(inner)
        d0 = cluster.cpu_seconds() if cluster else 0.0
        t0, c0 = time.perf_counter(), time.process_time()
        _, frame = evaluate_samples(model, "autoattack", x, y, executor=ex,
                                    shard_size=args.shard_size, **kw)
        wall, driver = time.perf_counter() - t0, time.process_time() - c0
        dask_cpu = cluster.cpu_seconds() - d0 if cluster else None
    finally:
        inner.close()
        if cluster is not None:
            cluster.close()
    return {"mode": mode, "wall_seconds": wall, "driver_cpu": driver,
            "dask_processes_cpu": dask_cpu, **ex.summary(),
            "load_before": round(os.getloadavg()[0], 2)}, frame


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", choices=("mnist", "digits"), default="mnist")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=25)
    ap.add_argument("--shard-size", type=int, default=25)
    ap.add_argument("--version", default="standard")
    ap.add_argument("--modes", default="processes,dask,dask-noprofile,dask-nomalloc")
    ap.add_argument("--model-dir", default=str(MODEL), help="the MNIST FGSM-RS CNN")
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.eps = 0.3 if args.dataset == "mnist" else 0.1
    data = load(args.dataset)
    if data is None:
        raise SystemExit(1)
    if args.dataset == "mnist":
        model = store.load(args.model_dir)[0]
    else:
        from attacks_common import trained

        model = trained(data, "cnn")
    x, y = data.test.x[:args.n], data.test.y[:args.n]
    common = {"benchmark": "dask_costs", "dataset": args.dataset, "n": args.n,
              "version": args.version, "batch_size": args.batch_size,
              "shard_size": args.shard_size, "device": device_name(torch.device("cpu")),
              "cpus": os.cpu_count(), "commit": code_version()}
    new, ref = [], None
    for mode in args.modes.split(","):
        r, frame = run(mode, model, x, y, args)
        ref = frame if ref is None else ref
        r["identical"] = bool(frame.equals(ref))
        new.append({**common, **r})
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                          for k, v in r.items()}), flush=True)
    keys = {(r["dataset"], r["mode"]) for r in new}
    old = []
    if OUT.exists():
        with open(OUT, newline="") as fh:
            old = [r for r in csv.DictReader(fh) if (r["dataset"], r["mode"]) not in keys]
    write_csv(old + new, OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
