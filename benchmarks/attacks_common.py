"""What the attack benchmark parts share: data, trained models (cached), interleaved timing,
the peers' lazy imports and the per-sample metrics every method is scored with."""
from __future__ import annotations

import gc
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from common import RESULTS, mnist_root
from torch import nn

from robustkit import load_dataset, models, store
from robustkit.data import Dataset, subset

CACHE = RESULTS.parents[1] / "runs" / "bench-attacks"  # trained models (git-ignored)
FAMILIES = ("mlp", "cnn", "svm", "gmm")
# Model params per dataset: the digits defaults, and benchmarks/train.py's MNIST list.
PARAMS: dict[str, dict[str, dict[str, Any]]] = {
    "digits": {"mlp": {}, "cnn": {}, "svm": {"kernel": "rbf"}, "gmm": {}},
    "mnist": {"mlp": {"epochs": 20}, "cnn": {"epochs": 10, "lr": 5e-3},
              "svm": {"kernel": "rbf"}, "gmm": {"pca": 50, "n_components": 5, "reg": 0.1}},
}
MNIST_TRAIN, MNIST_TEST = 10_000, 1_000


class Data(NamedTuple):
    name: str
    train: Dataset
    test: Dataset


def load(dataset: str, *, seed: int = 0) -> Data | None:
    """digits (1347 train / 450 test), or MNIST (10,000 train / 1,000 test images, stratified
    subsets); None with a message when MNIST is absent."""
    if dataset == "digits":
        return Data("digits", load_dataset("digits", "train", seed=seed),
                    load_dataset("digits", "test", seed=seed))
    root = mnist_root()
    if root is None:
        print("MNIST not found: skipping the MNIST rows", file=sys.stderr)
        return None
    tr = subset(load_dataset("mnist", "train", root=root), MNIST_TRAIN, seed=seed)
    te = subset(load_dataset("mnist", "test", root=root), MNIST_TEST, seed=seed)
    return Data("mnist", tr, te)


def trained(data: Data, family: str, *, seed: int = 0) -> nn.Module:
    """The family's model on ``data`` (float32, CPU, eval mode), trained once and cached in
    runs/bench-attacks/ (safetensors + JSON through robustkit.store)."""
    params = PARAMS[data.name][family]
    folder = CACHE / f"{data.name}-{family}-s{seed}"
    key = json.loads(json.dumps({"params": params, "n": len(data.train.y)}))
    if (folder / "model.json").is_file() and store.read_model_meta(folder).extra.get("key") == key:
        return store.load(folder)[0]
    t0 = time.perf_counter()
    module, rec = models.train(family, (data.train, data.test), seed=seed, device="cpu",
                               **params)
    print(f"[{data.name}] trained {family} in {time.perf_counter() - t0:.1f} s, "
          f"test accuracy {rec.test_accuracy:.4f}", flush=True)
    store.save(module, folder, record=rec, extra={"key": key})
    return module


def cpu_clock() -> bool:
    """Whether per-thread CPU time measures the work: one torch thread, one BLAS thread, no
    GPU. Then other processes on a shared machine inflate wall time but not this clock."""
    return torch.get_num_threads() == 1 and not torch.cuda.is_available()


def _clock() -> float:
    return time.thread_time() if cpu_clock() else time.perf_counter()


def median_times(fns: dict[str, Callable[[], Any]], *, repeats: int = 100,
                 warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each function (see ``sample_times``)."""
    return {name: statistics.median(s)
            for name, s in sample_times(fns, repeats=repeats, warmup=warmup).items()}


def sample_times(fns: dict[str, Callable[[], Any]], *, repeats: int = 100,
                 warmup: int = 2) -> dict[str, list[float]]:
    """Seconds of every call of each function, ``repeats`` rounds, the calls interleaved
    (A B C A B C ...) so that load from other processes hits every method alike: entry r
    of every list comes from round r (see ``paired``). Seconds are per-thread CPU time when
    ``cpu_clock()`` (wall time otherwise, after a CUDA synchronize)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for r in range(repeats):
            # Rotate who goes first: the first call of a round pays for cold caches.
            for name in names[r % len(names):] + names[:r % len(names)]:
                _sync()
                t0 = _clock()
                fns[name]()
                _sync()
                samples[name].append(_clock() - t0)
    finally:
        if gc_was:
            gc.enable()
    return samples


def paired(a: list[float], b: list[float]) -> dict[str, float]:
    """Paired comparison of two methods timed in the same rounds: the median of the
    per-round ratios a/b, its distribution-free 95% interval (order statistics of the
    sign test) and the share of rounds in which a was faster. "a is faster than b" holds
    when the interval's upper end is below 1."""
    ratios = sorted(x / y for x, y in zip(a, b, strict=True))
    n = len(ratios)
    half = 0.98 * n ** 0.5  # 1.96 * sqrt(n) / 2
    lo, hi = max(0, int(n / 2 - half)), min(n - 1, math.ceil(n / 2 + half))
    return {"median": statistics.median(ratios), "low": ratios[lo], "high": ratios[hi],
            "faster_share": sum(r < 1 for r in ratios) / n}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """(result, seconds) of one call, on the clock of ``median_times``."""
    _sync()
    t0 = _clock()
    out = fn()
    _sync()
    return out, _clock() - t0


def peer(module: str) -> Any | None:
    """Import a peer library lazily; None (and a message) when it is not installed."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        print(f"{module} is not installed ({exc}): skipping its rows "
              "(pip install -e '.[bench]')", file=sys.stderr)
        return None


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).argmax(1)


def minimal_scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   x_adv: torch.Tensor) -> dict[str, Any]:
    """Score a minimal-perturbation attack the same way for every library: on the samples
    the model classifies correctly, the share whose label x_adv flips, and the median /
    mean L2 norm of those successful perturbations."""
    x_adv = torch.as_tensor(x_adv, dtype=x.dtype).reshape(x.shape).clamp(0, 1)
    correct = predict(model, x) == y
    flipped = (predict(model, x_adv) != y) & correct
    l2 = (x_adv - x).flatten(1).norm(dim=1)[flipped]
    return {"n_correct": int(correct.sum()),
            "success_rate": round(float(flipped.sum()) / max(int(correct.sum()), 1), 4),
            "l2_median": round(float(l2.median()), 4) if len(l2) else float("nan"),
            "l2_mean": round(float(l2.mean()), 4) if len(l2) else float("nan")}


def fooling_rate(model: nn.Module, x: torch.Tensor, v: torch.Tensor) -> float:
    """Share of x whose predicted label changes when v is added (clipped to [0, 1]); the
    UAP paper's definition, computed the same way for every library's v."""
    v = torch.as_tensor(v, dtype=x.dtype).reshape(x.shape[1:])
    return round(float((predict(model, x) != predict(model, (x + v).clamp(0, 1)))
                       .double().mean()), 4)


def code_version() -> str:
    """The commit measured, with "+dirty" when robustkit/ differs from it (other people's
    uncommitted work in the checkout is measured too, and the rows should say so)."""
    import subprocess

    root = RESULTS.parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "robustkit"], cwd=root,
                               text=True, capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def art_classifier(model: nn.Module, x: torch.Tensor, n_classes: int) -> Any:
    """ART's PyTorchClassifier around ``model`` (cross-entropy loss, clip values [0, 1])."""
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                             nb_classes=n_classes, clip_values=(0.0, 1.0),
                             device_type="gpu" if x.device.type == "cuda" else "cpu")
