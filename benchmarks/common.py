"""Helpers shared by the benchmark scripts: data roots, device names, CSV output."""
from __future__ import annotations

import csv
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SHARED_MNIST = HERE.parents[1] / "shared" / "datasets" / "mnist"


def mnist_root() -> Path | None:
    """A data root whose MNIST/raw/ links to ../shared/datasets/mnist, or None if absent.

    ``$ROBUSTKIT_DATA`` wins when it already holds MNIST.
    """
    env = os.environ.get("ROBUSTKIT_DATA")
    if env and (Path(env) / "MNIST" / "raw").is_dir():
        return Path(env)
    if not (SHARED_MNIST / "train-images-idx3-ubyte.gz").exists():
        return None
    root = Path(tempfile.mkdtemp(prefix="robustkit-bench-"))
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in SHARED_MNIST.glob("*.gz"):
        (raw / f.name).symlink_to(f)
    return root


def device_name(device: torch.device) -> str:
    """A readable device description for CSV rows (GPU model, or CPU and core count)."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.machine()}x{os.cpu_count()}"


def write_csv(rows: list[dict], path: Path) -> None:
    """Write rows atomically (temp file + rename), columns from the first row's keys."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def markdown_table(rows: list[dict], cols: list[str]) -> str:
    """A GitHub markdown table of ``cols`` for the README."""
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def best_cpu(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """(the least process CPU seconds of ``repeats`` calls of fn, the last call's result)."""
    times, out = [], None
    for _ in range(repeats):
        start = time.process_time()
        out = fn()
        times.append(time.process_time() - start)
    return min(times), out
