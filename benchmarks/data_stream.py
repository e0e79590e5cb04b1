"""Peak memory of evaluating an image folder streamed vs in memory, as the folder grows.

Writes N synthetic 3x224x224 JPEGs (10 classes, smooth class-coloured gradients plus
noise, ~10 KB each) into ``folder:imgs`` under a temporary data root, then evaluates FGSM
(eps 2/255 and 8/255) on a tiny CNN (8x8 average pool, 3x3 conv to 8 maps, 4x4
average pool, linear; seeded random weights: memory, not accuracy, is measured) over the first N
images, each run in a fresh child process whose peak RSS (``ru_maxrss``) is recorded:

- ``stream``: ``evaluate_stream`` over ``iter_batches(..., batch_size=64)`` (the images
  decoded one batch at a time, in this process: ``num_workers=0``);
- ``memory``: ``load_dataset`` + ``evaluate`` (all N images as one float32 tensor,
  602 KB each), for contrast, at the smaller N only;
- ``baseline``: the child imports torch and robustkit and builds the model, nothing more.

N = 1000, 2500, 5000 streamed and 500, 1000 in memory (fractions of ``--max-n``).
The 50,000-image row is extrapolated, not measured: the largest measured stream peak
plus (50,000 - N) times the larger of the least-squares slope through the stream rows and
the bytes the stream keeps per image (its path and label, and per eps the prediction and
two norms: ``KEPT_BYTES``, a generous bound).

Usage: python benchmarks/data_stream.py [--max-n 5000]
       -> benchmarks/results/data_stream.csv
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import RESULTS, write_csv

SIZE, CLASSES, BATCH, EPS = 224, 10, 64, (2 / 255, 8 / 255)
MAX_N, TARGET_N = 5000, 50_000
KEPT_BYTES = 400 + 16 + 16 * len(EPS)  # a Path + label + (pred int64, l2, linf) per eps
STREAM_FRACTIONS, MEMORY_FRACTIONS = (0.2, 0.5, 1.0), (0.1, 0.2)  # of --max-n


def write_images(root: Path, n: int, seed: int = 0) -> float:
    """``root/imgs/{train,test}/c<k>/<i>.jpg``: n training images, a few test images."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, SIZE, dtype=np.float32)
    t0 = time.perf_counter()
    for split, count in (("train", n), ("test", CLASSES)):
        for i in range(count):
            k = i % CLASSES
            folder = root / "imgs" / split / f"c{k}"
            folder.mkdir(parents=True, exist_ok=True)
            colour = np.array([(k * 37) % 256, (k * 91) % 256, (k * 53) % 256], np.float32)
            grad = np.outer(ramp, ramp[::-1])[:, :, None] * colour
            px = np.clip(grad + rng.normal(0, 8, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(px).save(folder / f"{i:06d}.jpg", quality=85)
    return time.perf_counter() - t0


def tiny_cnn():
    import torch
    from torch import nn

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(nn.AvgPool2d(8), nn.Conv2d(3, 8, 3), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                             nn.Linear(128, CLASSES)).eval()


def child(mode: str, n: int, root: str) -> None:
    """One measurement: print a JSON line with peak RSS and seconds."""
    import torch

    torch.set_num_threads(1)
    from robustkit import load_dataset
    from robustkit.data import iter_batches
    from robustkit.evaluate import evaluate
    from robustkit.evaluate.stream import evaluate_stream

    model = tiny_cnn()
    name = f"folder:imgs,size={SIZE}"
    t0 = time.perf_counter()
    rows: list[dict] = []
    if mode == "stream":
        batches = iter_batches(name, "train", root, batch_size=BATCH, limit=n)
        rows = evaluate_stream(model, "fgsm", batches, eps=list(EPS))
    elif mode == "memory":
        x, y, _ = load_dataset(name, "train", root, limit=n)
        rows = evaluate(model, "fgsm", x, y, eps=list(EPS), batch_size=BATCH)
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"mode": mode, "n": n, "peak_rss_mb": round(peak_mb, 1),
                      "seconds": round(seconds, 2),
                      "clean_accuracy": rows[-1]["clean_accuracy"] if rows else None,
                      "fooling_rate_8_255": rows[-1]["fooling_rate"] if rows else None,
                      "evaluated": rows[-1]["n"] if rows else 0}))


def measure(mode: str, n: int, root: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(n), str(root)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-n", type=int, default=MAX_N)
    ap.add_argument("--child", nargs=3, metavar=("MODE", "N", "ROOT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2])
        return
    root = Path(tempfile.mkdtemp(prefix="robustkit-stream-"))
    try:
        secs = write_images(root, args.max_n)
        size_mb = sum(f.stat().st_size for f in root.rglob("*.jpg")) / 2**20
        print(f"wrote {args.max_n} JPEGs ({size_mb:.0f} MB) in {secs:.0f} s", flush=True)
        rows = [measure("baseline", 0, root)]
        rows += [measure("stream", round(f * args.max_n), root) for f in STREAM_FRACTIONS]
        rows += [measure("memory", round(f * args.max_n), root) for f in MEMORY_FRACTIONS]
        for r in rows:
            print(r, flush=True)
        stream = [r for r in rows if r["mode"] == "stream"]
        slope = float(np.polyfit([r["n"] for r in stream],
                                 [r["peak_rss_mb"] for r in stream], 1)[0])
        per_n = max(slope, KEPT_BYTES / 2**20)
        top = max(stream, key=lambda r: r["n"])
        peak = max(r["peak_rss_mb"] for r in stream) + per_n * (TARGET_N - top["n"])
        per_image_mb = 3 * SIZE * SIZE * 4 / 2**20
        rows.append({"mode": "stream (extrapolated)", "n": TARGET_N,
                     "peak_rss_mb": round(peak, 1), "seconds": None,
                     "clean_accuracy": None, "fooling_rate_8_255": None, "evaluated": None})
        rows.append({"mode": "memory (x alone, computed)", "n": TARGET_N,
                     "peak_rss_mb": round(per_image_mb * TARGET_N, 1), "seconds": None,
                     "clean_accuracy": None, "fooling_rate_8_255": None, "evaluated": None})
        for r in rows:
            r.update(batch_size=BATCH if r["mode"].startswith("stream") else None,
                     image="3x224x224 jpeg", device="cpu:1 thread")
        print(f"stream: fitted slope {slope * 1000:.2f} MB per 1000 images, kept state "
              f"{KEPT_BYTES * 1000 / 2**20:.2f} MB per 1000 -> {peak:.0f} MB at {TARGET_N}")
        write_csv(rows, RESULTS / "data_stream.csv")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
