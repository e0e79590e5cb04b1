"""robustkit's AutoAttack vs PGD vs a reference AutoAttack chain built from torchattacks.

Per model and eps (Linf), on the same test images: robust accuracy and seconds of
    robustkit autoattack      standard: APGD-CE, APGD-T (9 x 100), FAB-T, Square (5000)
    robustkit apgd-ce         APGD-CE alone (100 steps), the chain's first attack
    robustkit pgd-ce 50x10    PGD, 50 steps x 10 restarts, cross-entropy
    robustkit pgd-margin 50x10  the same with the C&W margin loss
    reference chain           torchattacks APGD(ce, 100) -> APGDT(100, n_classes) ->
                              FAB(multi_targeted, 100) -> Square(5000), each on the points
                              still robust, as AutoAttack runs them
While robustkit has no ``fab`` attack its chain skips FAB-T and the ``fab`` column says so.

Run:
    .venv/bin/python benchmarks/attacks_autoattack.py --threads 1              # digits
    .venv/bin/python benchmarks/attacks_autoattack.py --dataset mnist --model-dir DIR
``--model-dir`` holds models saved with ``robustkit.store.save``: DIR itself, or one
subfolder per model (named by the folder). Without it the models are trained and cached
as in the other attack benchmarks (runs/bench-attacks/), plus ``cnn-pgd``: the digits CNN
adversarially trained by ``robustkit.defenses.defend("pgd", ...)`` at eps 0.1.
Further rows:
    robustkit autoattack curve (5 eps)   5 eps up to the run's largest, the run's eps among
                                         them, in one ``autoattack_curve`` call; its robust
                                         accuracy is at the largest eps, the ``curve`` column
                                         has every eps's
    ART AutoAttack (defaults)            ART's ``AutoAttack`` as shipped (APGD-CE and
                                         APGD-DLR with 5 random starts each, DeepFool,
                                         Square 5 x 5000), on the first ``--art-n`` images;
                                         "robustkit autoattack" runs on the same images too
Every method runs on the model wrapped in ``passes.Counted``: ``forward_images`` and
``backward_images`` count the images through its forward and backward passes, and
``floor_seconds`` is what those passes alone cost (per-image costs timed on the first
``FLOOR_BATCH`` images in one batch, in the same process): no implementation of the same
passes can be faster. ``--models`` and ``--methods`` (substrings, or NAME@N for one method
on N images) select what runs; a rerun replaces the rows with
the same dataset, model, eps, method and n, and keeps the others. Output:
benchmarks/results/attacks_autoattack.csv.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from attacks_common import (
    art_classifier,
    code_version,
    cpu_clock,
    load,
    peer,
    predict,
    timed,
    trained,
)
from common import RESULTS, device_name, write_csv
from passes import Counted, floor_seconds, per_image_costs

from robustkit import store
from robustkit.attacks.apgd import apgd
from robustkit.attacks.autoattack import autoattack, autoattack_curve
from robustkit.attacks.pgd import pgd

EPS = {"digits": (0.05, 0.1, 0.2), "mnist": (0.1, 0.2, 0.3)}
FAMILIES = ("mlp", "cnn", "svm", "gmm", "cnn-pgd")
CURVE = "robustkit autoattack curve (5 eps)"
ART = "ART AutoAttack (defaults)"
OUT = RESULTS / "attacks_autoattack.csv"
FLOOR_BATCH = 1024  # at most this many images per pass when timing one pass


def ours(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float
         ) -> dict[str, Callable[[], tuple[torch.Tensor, str]]]:
    """robustkit's methods: each returns (x_adv, fab status)."""
    def chain() -> tuple[torch.Tensor, str]:
        res = autoattack(model, x, y, eps=eps)
        fab = "absent: fab_t skipped" if "fab_t" in res.info["skipped"] else "run"
        return res.x_adv, fab

    return {
        "robustkit autoattack": chain,
        "robustkit apgd-ce": lambda: (apgd(model, x, y, eps=eps).x_adv, ""),
        "robustkit pgd-ce 50x10": lambda: (pgd(model, x, y, eps=eps, steps=50, restarts=10,
                                               loss="ce").x_adv, ""),
        "robustkit pgd-margin 50x10": lambda: (pgd(model, x, y, eps=eps, steps=50,
                                                   restarts=10, loss="margin").x_adv, ""),
    }


def reference_chain(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                    n_classes: int) -> tuple[torch.Tensor, str] | None:
    """AutoAttack's standard chain assembled from torchattacks, each attack on the points
    the earlier ones left robust (None without torchattacks)."""
    ta = peer("torchattacks")
    if ta is None:
        return None
    with contextlib.redirect_stdout(io.StringIO()):  # "Failed to set device" (SVM/GMM)
        attacks = [ta.APGD(model, eps=eps, steps=100, loss="ce", seed=0),
                   ta.APGDT(model, eps=eps, steps=100, n_classes=n_classes, seed=0),
                   ta.FAB(model, eps=eps, steps=100, multi_targeted=True,
                          n_classes=n_classes, seed=0),
                   ta.Square(model, eps=eps, n_queries=5000, seed=0)]
    x_adv = x.clone()
    robust = predict(model, x) == y
    for atk in attacks:
        atk.set_device(x.device)
        rows = robust.nonzero().squeeze(1)
        if not len(rows):
            break
        out = atk(x[rows], y[rows]).detach()
        # as AutoAttack does: a point counts only inside the ball (FAB is minimal-norm)
        inside = (out - x[rows]).flatten(1).abs().amax(1) <= eps + 1e-6
        out = (x[rows] + (out - x[rows]).clamp(-eps, eps)).clamp(0, 1)
        hit = (predict(model, out) != y[rows]) & inside
        x_adv[rows[hit]], robust[rows[hit]] = out[hit], False
    return x_adv, "run"


def curve_grid(grid: list[float]) -> list[float]:
    """5 eps up to the largest of ``grid``, every eps of ``grid`` among them (the gaps are
    filled by halving the widest one), so that the curve can be checked against the
    single-eps runs."""
    if len(set(grid)) == 1:
        return [round(grid[0] * k / 5, 6) for k in range(1, 6)]
    out = sorted(set(grid) | {0.0})
    while len(out) < 6:  # the widest gap, the smallest eps first among equal ones
        i = max(range(len(out) - 1), key=lambda j: (round(out[j + 1] - out[j], 6), -j))
        out.insert(i + 1, round((out[i] + out[i + 1]) / 2, 6))
    return out[1:6] if len(out) == 6 else out[-5:]


def curve(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, grid: list[float]
          ) -> tuple[torch.Tensor, str, dict[str, str]]:
    """The 5-eps curve in one call: x_adv at its largest eps, and the robust accuracy at
    each eps (JSON) in the ``curve`` column."""
    res = autoattack_curve(model, x, y, eps=grid)
    acc = {f"{e:g}": round(float((r.pred == y).double().mean()), 4) for e, r in zip(grid, res)}
    return res[-1].x_adv, "run", {"curve": json.dumps(acc)}


def art_autoattack(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                   n_classes: int) -> tuple[torch.Tensor, str] | None:
    """ART's AutoAttack with its default attack list (None without ART)."""
    if peer("art") is None:
        return None
    from art.attacks.evasion import AutoAttack

    atk = AutoAttack(art_classifier(model, x, n_classes), eps=eps, batch_size=len(x))
    with contextlib.redirect_stdout(io.StringIO()):
        out = atk.generate(x.numpy(), y=y.numpy())
    return torch.as_tensor(out, dtype=x.dtype), "deepfool instead"


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=tuple(EPS), default="digits")
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
    data = load(args.dataset)
    if data is None:
        return 1
    n = args.n or len(data.test.y)
    x, y = data.test.x[:n], data.test.y[:n]
    base = {"dataset": data.name, "n": n, "device": device_name(x.device),
            "threads": torch.get_num_threads(), "commit": code_version(),
            "clock": "thread cpu" if cpu_clock() else "wall"}
    rows = []
    for family, plain in models_for(args, data).items():
        plain.eval()
        k = int(plain(x[:1]).shape[1])
        costs = per_image_costs(plain, x[:FLOOR_BATCH])
        model = Counted(plain)  # every method runs on it: its passes are counted
        grid = args.eps or EPS[data.name]
        cgrid = curve_grid(list(grid))
        xa, ya = x[:args.art_n], y[:args.art_n]
        for eps in grid:
            methods: dict[tuple[str, int], Callable[[], Any]] = {
                (name, n): fn for name, fn in ours(model, x, y, eps).items()}
            if not args.skip_reference:
                methods["reference chain (torchattacks)", n] = (
                    lambda e=eps, m=model, k=k: reference_chain(m, x, y, e, k))
            if eps == max(grid):
                methods[CURVE, n] = lambda m=model, g=cgrid: curve(m, x, y, g)
            if args.art_n and not args.skip_reference:
                if len(xa) < n:
                    methods["robustkit autoattack", len(xa)] = ours(model, xa, ya, eps)[
                        "robustkit autoattack"]
                methods[ART, len(xa)] = (lambda e=eps, m=model, k=k, xa=xa, ya=ya:
                                         art_autoattack(m, xa, ya, e, k))
            for (name, size), fn in methods.items():
                if args.methods and not any(picked(m, name, size) for m in args.methods):
                    continue
                model.reset()
                t0 = time.perf_counter()
                out, seconds = timed(fn)
                if out is None:
                    continue
                x_adv, fab, *extra = out
                linf = float((x_adv - x[:size]).abs().amax())
                robust = float((predict(plain, x_adv) == y[:size]).double().mean())
                rows.append({**base, "n": size, "model": family, "eps": eps, "method": name,
                             "robust_accuracy": round(robust, 4),
                             "seconds": round(seconds, 3),
                             "seconds_per_image": round(seconds / size, 5),
                             "wall_seconds": round(time.perf_counter() - t0, 3),
                             "fab": fab, "linf_max": round(linf, 6),
                             "forward_images": model.forward_images,
                             "backward_images": model.backward_images,
                             "floor_seconds": round(floor_seconds(
                                 model.forward_images, model.backward_images, costs), 3),
                             **(extra[0] if extra else {})})
                print(rows[-1], flush=True)
    def key(r: dict[str, Any]) -> tuple[str, ...]:
        return tuple(str(r[c]) for c in ("dataset", "model", "eps", "method", "n"))

    done = {key(r) for r in rows}
    kept = [r for r in _read(OUT) if key(r) not in done]
    order = ["dataset", "model", "eps", "n", "method", "robust_accuracy", "seconds",
             "seconds_per_image", "device", "threads", "commit"]
    write_csv([{c: r.get(c, "") for c in order} | r for r in kept + rows], OUT)
    return 0


def _read(path: Path) -> list[dict[str, Any]]:
    import csv

    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


if __name__ == "__main__":
    raise SystemExit(main())
