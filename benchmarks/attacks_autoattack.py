"""robustkit's AutoAttack vs PGD vs a reference AutoAttack chain built from torchattacks.

Per model and eps (Linf), on the same test images: robust accuracy and seconds of
    robustkit autoattack      standard: APGD-CE, APGD-T (9 x 100), FAB-T, Square (5000)
    robustkit autoattack lean the lean version (robustkit.attacks.autoattack_lean)
    robustkit apgd-ce         APGD-CE alone (100 steps), the chain's first attack
    robustkit pgd-ce 50x10    PGD, 50 steps x 10 restarts, cross-entropy
    robustkit pgd-margin 50x10  the same with the C&W margin loss
    reference chain           torchattacks APGD(ce, 100) -> APGDT(100, n_classes) ->
                              FAB(multi_targeted, 100) -> Square(5000), each on the points
                              still robust, as AutoAttack runs them; seeds 0, 1, 2
                              (method "... seed 1", "... seed 2")
The ``version`` column names the AutoAttack version of each row (standard, lean,
reference), ``broken_by`` the breaks per attack of robustkit's chains, ``triggers`` why
the lean version ran FAB-T and Square (close / masking / none).

Run:
    .venv/bin/python benchmarks/attacks_autoattack.py --threads 1              # digits
    .venv/bin/python benchmarks/attacks_autoattack.py --dataset mnist --model-dir DIR  # mnist_models.py
    .venv/bin/python benchmarks/attacks_autoattack.py --dataset unseen   # autoattack_unseen
``--model-dir`` holds models saved with ``robustkit.store.save``: DIR itself, or one
subfolder per model (named by the folder). Without it the models are trained and cached
as in the other attack benchmarks (runs/bench-attacks/), plus ``cnn-pgd``: the digits CNN
adversarially trained by ``robustkit.defenses.defend("pgd", ...)`` at eps 0.1.
Further rows:
    robustkit autoattack curve (5 eps)   (and "robustkit autoattack lean curve (5 eps)")
                                         5 eps up to the run's largest, the run's eps among
                                         them, in one ``autoattack_curve`` call; its robust
                                         accuracy is at the largest eps, the ``curve`` column
                                         has every eps's
    ART AutoAttack (defaults)            ART's ``AutoAttack`` as shipped (APGD-CE and
                                         APGD-DLR with 5 random starts each, DeepFool,
                                         Square 5 x 5000), on the first ``--art-n`` images;
                                         "robustkit autoattack" runs on the same images too
Every method runs inside ``robustkit.attacks.passes.counting(model)``: ``forward_images``
and ``backward_images`` count the images through its forward and backward passes, and
``floor_seconds`` is what those passes alone cost (per-image costs timed on the first
``FLOOR_BATCH`` images in one batch, in the same process): no implementation of the same
passes can be faster. ``--models`` and ``--methods`` (substrings, or NAME@N for one method
on N images) select what runs; a rerun replaces the rows with
the same dataset, model, eps, method and n, and keeps the others. Each full-size method's
per-sample robust mask is kept in runs/aa-masks/ (git-ignored), so that the reference
seeds and robustkit's chains may run in separate processes and ``missed_vs_reference``
still compares them sample by sample. Output: benchmarks/results/attacks_autoattack.csv.
"""
from __future__ import annotations

import argparse
import fcntl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from attacks_common import code_version, cpu_clock, load, predict, timed, trained
from autoattack_masks import MASKS, load_masks, save_mask
from autoattack_methods import (
    AA,
    LEAN,
    REF_SEEDS,
    art_autoattack,
    curve,
    curve_grid,
    ours,
    ref_name,
    reference_chain,
)
from common import RESULTS, device_name, write_csv
from passes import floor_seconds, per_image_costs

from robustkit import store
from robustkit.attacks.passes import counting

EPS = {"digits": (0.05, 0.1, 0.2), "mnist": (0.1, 0.2, 0.3)}
FAMILIES = ("mlp", "cnn", "svm", "gmm", "cnn-pgd")
CURVE = "robustkit autoattack curve (5 eps)"
LEAN_CURVE = "robustkit autoattack lean curve (5 eps)"
ART = "ART AutoAttack (defaults)"
OUT = RESULTS / "attacks_autoattack.csv"
FLOOR_BATCH = 1024  # at most this many images per pass when timing one pass


def pgd_trained_cnn(data: Any, *, seed: int = 0) -> torch.nn.Module:
    """The digits CNN adversarially trained with PGD at eps 0.1 (cached like ``trained``)."""
    from attacks_common import CACHE

    from robustkit.defenses import defend

    folder = CACHE / f"{data.name}-cnn-pgd-s{seed}"
    if (folder / "model.json").is_file():
        return store.load(folder)[0]
    t0 = time.perf_counter()
    res = defend("pgd", "cnn", data.train.x, data.train.y, eps=0.1, seed=seed)
    print(f"[{data.name}] trained cnn-pgd in {time.perf_counter() - t0:.1f} s", flush=True)
    store.save(res.model, folder, family="cnn")
    return res.model


def models_for(args: argparse.Namespace, data: Any) -> dict[str, torch.nn.Module]:
    """The models to attack: stored ones from --model-dir, else trained and cached."""
    want = (lambda name: not args.models or name in args.models)
    if args.model_dir is None:
        return {f: pgd_trained_cnn(data) if f == "cnn-pgd" else trained(data, f)
                for f in FAMILIES if want(f)}
    root = Path(args.model_dir)
    if (root / "model.json").is_file():
        module, meta = store.load(root)
        return {meta.family: module}
    return {d.name: store.load(d)[0] for d in sorted(root.iterdir())
            if (d / "model.json").is_file() and want(d.name)}


def picked(pattern: str, name: str, size: int) -> bool:
    """``--methods`` matching: a substring of the method's name, or ``NAME@N`` for exactly
    that method on N images."""
    if "@" in pattern:
        want, n = pattern.rsplit("@", 1)
        return name == want and str(size) == n
    return pattern in name


Task = tuple[str, torch.nn.Module, torch.Tensor, torch.Tensor, list[float]]


def tasks_for(args: argparse.Namespace) -> list[Task]:
    """(dataset, model name, model, x, y, eps grid) of every task to run."""
    if args.dataset == "unseen":
        from autoattack_unseen import tasks

        return [("unseen", name, m, x, y, args.eps or grid)
                for name, (m, x, y, grid) in tasks(args.models).items()]
    data = load(args.dataset)
    if data is None:
        return []
    n = args.n or len(data.test.y)
    x, y = data.test.x[:n], data.test.y[:n]
    return [(data.name, family, plain, x, y, list(args.eps or EPS[data.name]))
            for family, plain in models_for(args, data).items()]


def methods_at(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
               grid: list[float], k: int, args: argparse.Namespace
               ) -> dict[tuple[str, int], Callable[[], Any]]:
    n = len(x)
    out: dict[tuple[str, int], Callable[[], Any]] = {
        (name, n): fn for name, fn in ours(model, x, y, eps).items()}
    if not args.skip_reference:
        for s in REF_SEEDS:
            out[ref_name(s), n] = lambda s=s: reference_chain(model, x, y, eps, k, seed=s)
    if eps == max(grid):
        cgrid = curve_grid(list(grid))
        out[CURVE, n] = lambda: curve(model, x, y, cgrid)
        out[LEAN_CURVE, n] = lambda: curve(model, x, y, cgrid, version="lean")
    xa, ya = x[:args.art_n], y[:args.art_n]
    if args.art_n and not args.skip_reference:
        if len(xa) < n:
            out[AA, len(xa)] = ours(model, xa, ya, eps)[AA]
        out[ART, len(xa)] = lambda: art_autoattack(model, xa, ya, eps, k)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=(*EPS, "unseen"), default="digits")
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--eps", type=float, nargs="+", default=None)
    ap.add_argument("--n", type=int, default=None, help="test images (default: all loaded)")
    ap.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--models", nargs="+", default=None, help="model names to run")
    ap.add_argument("--methods", nargs="+", default=None,
                    help="run only methods whose name contains one of these (or NAME@N: "
                         "that method on N images)")
    ap.add_argument("--art-n", type=int, default=100, help="images for ART's AutoAttack")
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    rows = []
    for dataset, family, plain, x, y, grid in tasks_for(args):
        plain.eval()
        k = int(plain(x[:1]).shape[1])
        costs = per_image_costs(plain, x[:FLOOR_BATCH])
        base = {"dataset": dataset, "device": device_name(x.device),
                "threads": torch.get_num_threads(), "commit": code_version(),
                "clock": "thread cpu" if cpu_clock() else "wall"}
        for eps in grid:
            masks: dict[str, torch.Tensor] = {}  # robust per sample, per method (all n)
            start = len(rows)
            for (name, size), fn in methods_at(plain, x, y, eps, grid, k, args).items():
                if args.methods and not any(picked(m, name, size) for m in args.methods):
                    continue
                t0 = time.perf_counter()
                with counting(plain) as passes:  # every pass of the method is counted
                    out, seconds = timed(fn)
                if out is None:
                    continue
                x_adv, fab, *extra = out
                linf = float((x_adv - x[:size]).abs().amax())
                kept = predict(plain, x_adv) == y[:size]
                robust = float(kept.double().mean())
                if size == len(x):
                    masks[name] = kept
                    save_mask(MASKS / _slug(dataset, family, eps, size), name, kept)
                rows.append({**base, "n": size, "model": family, "eps": eps, "method": name,
                             "robust_accuracy": round(robust, 4),
                             "seconds": round(seconds, 3),
                             "seconds_per_image": round(seconds / size, 5),
                             "wall_seconds": round(time.perf_counter() - t0, 3),
                             "fab": fab, "linf_max": round(linf, 6),
                             "forward_images": passes.forward_images,
                             "backward_images": passes.backward_images,
                             "floor_seconds": round(floor_seconds(
                                 passes.forward_images, passes.backward_images, costs), 3),
                             **(extra[0] if extra else {})})
                print(rows[-1], flush=True)
                _save(rows)
            _missed(rows[start:], {**load_masks(MASKS / _slug(dataset, family, eps, len(x))),
                                   **masks})
            _save(rows)

    _save(rows)
    return 0


def _save(rows: list[dict[str, Any]]) -> None:
    """Merge ``rows`` into the CSV (rows of the same dataset, model, eps, method and n are
    replaced); called after every row, so that a run cut short keeps what it measured."""
    def key(r: dict[str, Any]) -> tuple[str, ...]:
        return tuple(str(r[c]) for c in ("dataset", "model", "eps", "method", "n"))

    done = {key(r) for r in rows}
    MASKS.mkdir(parents=True, exist_ok=True)
    with open(MASKS / "results.lock", "w") as lock:  # runs in parallel merge in turn
        fcntl.flock(lock, fcntl.LOCK_EX)
        kept = [r for r in _read(OUT) if key(r) not in done]
        for r in kept:  # rows from before the version column: standard, or the reference
            if not r.get("version") and r["method"] in (AA, CURVE):
                r["version"] = "standard"
        order = ["dataset", "model", "eps", "n", "method", "version", "robust_accuracy",
                 "seconds", "seconds_per_image", "device", "threads", "commit"]
        write_csv([{c: r.get(c, "") for c in order} | r for r in kept + rows], OUT)


def _missed(rows: list[dict[str, Any]], masks: dict[str, torch.Tensor]) -> None:
    """Add to robustkit's full-size chain rows the samples that some seed of the
    reference chain broke and the chain left robust (``missed_vs_reference``)."""
    refs = [m for name, m in masks.items() if name.startswith(ref_name(0))]
    if not refs:
        return
    broken = ~torch.stack(refs).all(0)  # broken by at least one seed
    for r in rows:
        if r["method"] in masks and r["method"] in (AA, LEAN):
            r["missed_vs_reference"] = int((broken & masks[r["method"]]).sum())
            r["reference_seeds"] = len(refs)


def _slug(dataset: str, model: str, eps: float, n: int) -> str:
    return f"{dataset}-{model}-{eps:g}-n{n}"


def _read(path: Path) -> list[dict[str, Any]]:
    import csv

    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


if __name__ == "__main__":
    raise SystemExit(main())
