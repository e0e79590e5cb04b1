"""The tables of benchmarks/tables.py about where work runs: one evaluation in shards over
processes and Dask, what a Dask task costs beside a process's, a sweep on each executor."""
from __future__ import annotations

from table_spec import Table

EXECUTOR_TABLES: list[Table] = [
    Table("shards.csv", "One evaluation in shards: one process, 2 worker processes, Dask",
          "python benchmarks/shards.py --dataset mnist --n 1000 --model-dir "
          "runs/mnist-models/cnn-fgsm_rs; python benchmarks/shards.py "
          "--dataset digits --n 100 --batch-size 25 --shard-size 25",
          (("dataset", "dataset"), ("model", "model"), ("attack", "attack"),
           ("params", "params"), ("n", "n"), ("mode", "mode"), ("workers", "workers"),
           ("wall_seconds", "wall s"), ("samples_per_second", "samples/s"),
           ("speedup", "vs one"), ("identical", "per-sample table identical"),
           ("shards_kept", "shards kept"), ("shards_total", "shards"),
           ("resume_exit", "resume exit"), ("load_before", "load before"),
           ("commit", "code")),
          note="Every worker 1 torch thread; shards of whole batches; `identical`: the "
               "per-sample table (samples.parquet) equals the one-process run's in every "
               "column. `fault` rows: kill -9 of a worker or of the driver of a `robustkit "
               "attack --workers 2 --out-dir` run after its second shard, then the same "
               "command again (`identical`: the resumed table equals an uninterrupted "
               "run's). `load before`: the 1-minute load average before the run; rows "
               "timed under load say nothing about speed. The MNIST rows ran on an "
               "otherwise idle 2-core machine (batches and shards of 50; the one-process "
               "row rerun with `--modes one` once the machine was idle, `vs one` against "
               "it). No GPU row exists yet: no GPU was "
               "available; where one is, run `--modes one,devices --devices cuda:0` (and "
               "`cuda:0,cuda:1`).",
          finding="AutoAttack (standard) on 1,000 MNIST images with the FGSM-RS CNN: 2 "
                  "worker processes give 1.79x the samples per second of one process, a "
                  "Dask scheduler with 2 single-threaded workers 1.87x, and both per-sample "
                  "tables equal the one-process table in every column; a killed worker or "
                  "driver loses only the shards in flight and the resumed table is equal."),
    Table("dask_costs.csv", "Where a Dask task spends its CPU, against a local process",
          "python benchmarks/dask_costs.py --n 100",
          (("dataset", "dataset"), ("n", "n"), ("mode", "mode"), ("tasks", "tasks"),
           ("task_thread_cpu", "CPU s in tasks"), ("worker_cpu", "worker CPU s"),
           ("worker_sys", "of which system"), ("worker_minflt", "page faults"),
           ("dask_processes_cpu", "all Dask processes CPU s"),
           ("bytes_per_task", "bytes per task"), ("malloc_trim_threshold", "MALLOC_TRIM"),
           ("identical", "identical"), ("load_before", "load before"), ("commit", "code")),
          note="AutoAttack standard on the MNIST FGSM-RS CNN, shards of 25, every worker 1 "
               "torch thread; CPU seconds (thread clock in the task; each worker process's "
               "CPU from its first task's start to its last task's end), which a loaded "
               "machine inflates far less than wall time. `dask`: `dask scheduler` + `dask "
               "worker --nworkers 2 --nthreads 1` on 127.0.0.1, as a user starts them; "
               "`-noprofile`: Dask's statistical profiler off; `-nomalloc`: the nanny does "
               "not set `MALLOC_TRIM_THRESHOLD_=65536`. `(before fix)`: the code before shard "
               "tasks raised glibc's mmap and trim thresholds where that variable is set "
               "and shipped only their own samples (a slice of x pickled all of x).",
          finding="The Dask nanny's `MALLOC_TRIM_THRESHOLD_=65536` turns off glibc's dynamic "
                  "mmap threshold: every tensor over 128 KiB became a fresh, zero-filled "
                  "mmap (15.6M page faults, 31.5 s of system time), 55% more CPU inside the "
                  "tasks than in a process worker. Undone in the task, the Dask tasks cost "
                  "what the process tasks cost; the profiler and event loops add the rest."),
    Table("sweep_executors.csv", "A sweep serially, on 2 processes and on Dask",
          "python benchmarks/sweep_executors.py --modes serial,processes,dask",
          (("mode", "mode"), ("test_limit", "test images"), ("wall_seconds", "wall s"),
           ("cpu_seconds", "CPU s (all processes)"), ("tasks", "tasks"),
           ("task_thread_cpu", "CPU s in tasks"), ("worker_cpu", "worker CPU s"),
           ("worker_minflt", "page faults"), ("train_seconds", "train s"),
           ("cells_seconds", "cells s"), ("rows", "rows"), ("identical", "rows identical"),
           ("load_before", "load before"), ("commit", "code")),
          note="CPU s: user + system time of every process of the run (driver, pool "
               "workers, Dask scheduler, nannies and workers): what the run cost, which a "
               "loaded machine does not inflate the way it inflates wall time. CPU s in "
               "tasks / worker CPU s: as in the Dask cost table, over the sweep's tasks.",
          finding="On an idle 2-core machine the digits attack sweep (312 rows) takes 49.4 s "
                  "serially, 28.6 s on 2 worker processes and 29.3 s on a Dask scheduler "
                  "with 2 workers (2.4% above the processes), with identical rows."),
]
