"""One evaluation split into shards: one process vs 2 worker processes vs a real Dask
scheduler with 2 single-threaded worker processes on the loopback address.

Per model, the same evaluation runs three ways, back to back in one script, every worker
with 1 torch thread: ``one`` (shards in this process), ``processes`` (2 local worker
processes) and ``dask`` (``dask scheduler`` + ``dask worker --nworkers 2 --nthreads 1``
started as subprocesses on 127.0.0.1). Each run's per-sample table is compared with the
one-process table, every column value for value (``identical``). Pools are started and
warmed (every worker has imported robustkit and run a shard) before the timed run, so
``wall_seconds`` is the evaluation, not process start-up; ``speedup`` is samples per second
over the one-process run's. ``--fault`` also kills (kill -9) a worker, then the driver, of
a ``robustkit attack --workers 2 --out-dir`` run after its first shards are written, reruns
it, and compares the resumed per-sample table with the uninterrupted one.

Run:
    .venv/bin/python benchmarks/shards.py --dataset digits                 # every family
    .venv/bin/python benchmarks/shards.py --dataset mnist --n 1000 --fault # FGSM-RS CNN
    .venv/bin/python benchmarks/shards.py --dataset mnist --n 1000 \
        --model-dir runs/mnist-models/cnn-fgsm_rs  # from mnist_models.py
Output: benchmarks/results/shards.csv (rows replaced per dataset, model and mode). The
speed bar (2 workers >= 1.7x one worker) needs an otherwise idle 2-core machine: the
``load_before`` column records ``os.getloadavg()`` before each run.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from attacks_common import PARAMS, code_version, load, trained
from common import RESULTS, device_name, write_csv
from dask_cluster import DaskCluster

from robustkit import models as robustkit_models
from robustkit import store
from robustkit.evaluate import evaluate_samples
from robustkit.executors import DeviceExecutor, ProcessExecutor, SerialExecutor

OUT = RESULTS / "shards.csv"
CACHE = RESULTS.parents[1] / "runs" / "bench-shards"  # trained models (git-ignored)
BIN = Path(sys.executable).parent
FAMILIES = ("linear", "svm", "gmm", "mlp", "cnn")
# Wong et al.'s FGSM-RS on MNIST (eps 0.3, alpha 0.375, cyclic lr 5e-3, batch 100)
FGSM_RS = {"epochs": 10, "batch_size": 100, "lr": 5e-3, "schedule": "cyclic"}


def fgsm_rs_cnn(epochs: int) -> torch.nn.Module:
    """The MNIST FGSM-RS CNN on the benchmarks' 10,000-image training subset, cached."""
    from robustkit import defenses

    data = load("mnist")
    if data is None:
        raise SystemExit("MNIST not found (see benchmarks/common.py: mnist_root)")
    folder = CACHE / f"mnist-cnn-fgsm_rs-e{epochs}"
    if (folder / "model.json").is_file():
        return store.load(folder)[0]
    t0 = time.perf_counter()
    res = defenses.defend("fgsm_rs", "cnn", data.train.x, data.train.y, eps=0.3,
                          model_params={**FGSM_RS, "epochs": epochs}, alpha=0.375,
                          n_classes=10, seed=0)
    print(f"trained FGSM-RS cnn ({epochs} epochs) in {time.perf_counter() - t0:.0f} s",
          flush=True)
    store.save(res.model, folder, family="cnn")
    return res.model


def run_modes(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, args: Any,
              modes: list[str]) -> list[dict[str, Any]]:
    """The same evaluation on each executor; rows with time, speed and identity."""
    kw = {"eps": args.eps, "batch_size": args.batch_size, "shard_size": args.shard_size,
          "seed": 0, "threads": 1, **args.params}
    out, ref, ref_rate = [], None, None
    for mode in modes:
        ex, cluster = _executor(mode, args)
        try:
            evaluate_samples(model, args.attack, x[:2 * args.batch_size],
                             y[:2 * args.batch_size], executor=ex,
                             **{**kw, "shard_size": args.batch_size})  # warm every worker
            load_before = os.getloadavg()[0]
            t0, c0 = time.perf_counter(), time.process_time()
            rows, frame = evaluate_samples(model, args.attack, x, y, executor=ex, **kw)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        finally:
            ex.close()
            if cluster is not None:
                cluster.close()
        rate = len(x) / wall
        ref = frame if ref is None else ref
        ref_rate = rate if ref_rate is None else ref_rate
        out.append({"mode": mode, "workers": ex.workers, "n": len(x), "wall_seconds": wall,
                    "driver_cpu_seconds": cpu, "samples_per_second": rate,
                    "speedup": rate / ref_rate, "identical": bool(frame.equals(ref)),
                    "robust_accuracy": rows[-1]["robust_accuracy"],
                    "load_before": round(load_before, 2)})
        print(json.dumps(out[-1]), flush=True)
    return out


def _executor(mode: str, args: Any) -> tuple[Any, DaskCluster | None]:
    if mode == "one":
        return SerialExecutor(), None
    if mode == "processes":
        return ProcessExecutor(2, threads=1), None
    if mode == "devices":
        return DeviceExecutor(args.devices, threads=1), None
    cluster = DaskCluster(args.dask_port)
    return cluster.executor(), cluster


def fault(model_dir: Path, args: Any) -> list[dict[str, Any]]:
    """kill -9 of a worker, then of the driver, mid-run; the resumed table vs a clean one."""
    import pandas as pd

    base = [str(BIN / "robustkit"), "attack", "--model", "m", "--workdir", str(model_dir),
            "--attack", args.attack, "--limit", str(args.n), "--device", "cpu",
            "--batch-size", str(args.batch_size), "--shard-size", str(args.shard_size),
            "--workers", "2", *(a for e in args.eps for a in ("--eps", str(e))),
            *(a for k, v in args.params.items() for a in ("--param", f"{k}={json.dumps(v)}"))]
    if args.dataset == "mnist":
        base += ["--dataset", "mnist", "--data-root", os.environ["ROBUSTKIT_DATA"]]
    tmp = Path(tempfile.mkdtemp(prefix="robustkit-fault-"))
    subprocess.run([*base, "--out-dir", str(tmp / "clean")], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    clean = pd.read_parquet(tmp / "clean" / "samples.parquet")
    rows = []
    for victim in ("worker", "driver"):
        out = tmp / victim
        proc = subprocess.Popen([*base, "--out-dir", str(out)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        parts = out / "samples.parts"
        while proc.poll() is None and len(list(parts.glob("part-*.parquet"))) < 2:
            time.sleep(0.05)
        kids = _children(proc.pid)
        if victim == "worker" and not kids:
            raise SystemExit("no worker process found to kill")
        target = kids[-1] if victim == "worker" else proc.pid
        os.kill(target, signal.SIGKILL)
        proc.wait()
        kept = len(list(parts.glob("part-*.parquet")))
        t0 = time.perf_counter()
        again = subprocess.run([*base, "--out-dir", str(out)], check=False,
                               stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        resumed = pd.read_parquet(out / "samples.parquet")
        rows.append({"mode": f"fault: kill -9 {victim}", "workers": 2, "n": args.n,
                     "first_exit": proc.returncode, "shards_kept": kept,
                     "shards_total": -(-args.n // args.shard_size),
                     "resume_exit": again.returncode,
                     "resume_seconds": time.perf_counter() - t0,
                     "identical": bool(resumed.equals(clean))})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _children(pid: int) -> list[int]:
    """The pool's worker processes (spawned; not multiprocessing's resource tracker, whose
    command line is ``...resource_tracker import main...``, while the workers' name
    ``tracker_fd``)."""
    import psutil

    kids = [(c.pid, " ".join(c.cmdline())) for c in psutil.Process(pid).children()]
    return [k for k, cmd in kids if "spawn_main" in cmd and "resource_tracker" not in cmd]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", choices=("digits", "mnist"), default="digits")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--n", type=int, default=None, help="test images (default: all)")
    ap.add_argument("--attack", default="autoattack")
    ap.add_argument("--param", action="append", default=[], metavar="KEY=JSON")
    ap.add_argument("--eps", type=float, action="append", default=None)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--shard-size", type=int, default=50)
    ap.add_argument("--modes", default="one,processes,dask")
    ap.add_argument("--devices", default="", help="with mode devices: cuda:0,cuda:1")
    ap.add_argument("--epochs", type=int, default=10, help="FGSM-RS epochs (MNIST)")
    ap.add_argument("--model-dir", default=None,
                    help="MNIST: a stored FGSM-RS CNN to load instead of training one")
    ap.add_argument("--fault", action="store_true")
    ap.add_argument("--dask-port", type=int, default=8797,
                    help="the scheduler's port (another run at once needs another)")
    args = ap.parse_args()
    args.params = {k: json.loads(v) for k, v in (p.split("=", 1) for p in args.param)}
    args.eps = args.eps or [0.3 if args.dataset == "mnist" else 0.1]
    args.devices = [d for d in args.devices.split(",") if d]
    torch.set_num_threads(1)
    data = load(args.dataset)
    if data is None:
        raise SystemExit(1)
    if args.dataset == "mnist":
        from common import mnist_root

        os.environ.setdefault("ROBUSTKIT_DATA", str(mnist_root()))
    n = args.n or len(data.test.y)
    args.n = n
    x, y = data.test.x[:n], data.test.y[:n]
    mnist = store.load(args.model_dir)[0] if args.model_dir else None
    models = {"cnn-fgsm_rs": mnist or fgsm_rs_cnn(args.epochs)} if args.dataset == "mnist" else {
        f: trained(data, f) if f in PARAMS["digits"] else
        robustkit_models.train(f, (data.train, data.test), seed=0)[0]
        for f in args.families.split(",")}
    common = {"benchmark": "shards", "dataset": args.dataset, "attack": args.attack,
              "params": json.dumps(args.params), "eps": json.dumps(args.eps),
              "batch_size": args.batch_size, "shard_size": args.shard_size, "threads": 1,
              "device": device_name(torch.device("cpu")), "cpus": os.cpu_count(),
              "commit": code_version()}
    for name, model in models.items():
        new = [{**common, "model": name, **r}
               for r in run_modes(model, x, y, args, [m for m in args.modes.split(",") if m])]
        if args.fault:
            with tempfile.TemporaryDirectory() as d:
                store.save(model, Path(d) / "m", family=name.split("-")[0],
                           dataset=data.test.info)
                new += [{**common, "model": name, **r} for r in fault(Path(d), args)]
        save(new)  # model by model: a long run stopped early keeps what it measured


def save(new: list[dict[str, Any]]) -> None:
    """Replace the rows of the same (dataset, model, mode) in ``OUT`` with ``new``."""
    keys = {(r["dataset"], r["model"], r["mode"]) for r in new}
    old = []
    if OUT.exists():
        with open(OUT, newline="") as fh:
            old = [r for r in csv.DictReader(fh)
                   if (r["dataset"], r["model"], r["mode"]) not in keys]
    write_csv(old + new, OUT)
    print(f"wrote {OUT}", flush=True)


if __name__ == "__main__":
    main()
