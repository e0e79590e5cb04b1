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
as in the other attack benchmarks (runs/bench-attacks/). Output:
benchmarks/results/attacks_autoattack.csv (a rerun replaces the rows of its dataset).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from attacks_common import code_version, cpu_clock, load, peer, predict, timed, trained
from common import RESULTS, device_name, write_csv

from robustkit import store
from robustkit.attacks.apgd import apgd
from robustkit.attacks.autoattack import autoattack
from robustkit.attacks.pgd import pgd

EPS = {"digits": (0.05, 0.1, 0.2), "mnist": (0.1, 0.2, 0.3)}
FAMILIES = ("mlp", "cnn", "svm", "gmm")
OUT = RESULTS / "attacks_autoattack.csv"


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


def models_for(args: argparse.Namespace, data: Any) -> dict[str, torch.nn.Module]:
    """The models to attack: stored ones from --model-dir, else trained and cached."""
    if args.model_dir is None:
        return {f: trained(data, f) for f in FAMILIES}
    root = Path(args.model_dir)
    if (root / "model.json").is_file():
        module, meta = store.load(root)
        return {meta.family: module}
    return {d.name: store.load(d)[0] for d in sorted(root.iterdir())
            if (d / "model.json").is_file()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=tuple(EPS), default="digits")
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--eps", type=float, nargs="+", default=None)
    ap.add_argument("--n", type=int, default=None, help="test images (default: all loaded)")
    ap.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
    ap.add_argument("--skip-reference", action="store_true")
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
    for family, model in models_for(args, data).items():
        model.eval()
        k = int(model(x[:1]).shape[1])
        for eps in args.eps or EPS[data.name]:
            methods: dict[str, Callable[[], Any]] = dict(ours(model, x, y, eps))
            if not args.skip_reference:
                methods["reference chain (torchattacks)"] = (
                    lambda e=eps, m=model, k=k: reference_chain(m, x, y, e, k))
            for name, fn in methods.items():
                t0 = time.perf_counter()
                out, seconds = timed(fn)
                if out is None:
                    continue
                x_adv, fab = out
                linf = float((x_adv - x).abs().amax())
                robust = float((predict(model, x_adv) == y).double().mean())
                rows.append({**base, "model": family, "eps": eps, "method": name,
                             "robust_accuracy": round(robust, 4),
                             "seconds": round(seconds, 3),
                             "seconds_per_image": round(seconds / n, 5),
                             "wall_seconds": round(time.perf_counter() - t0, 3),
                             "fab": fab, "linf_max": round(linf, 6)})
                print(rows[-1], flush=True)
    kept = [r for r in _read(OUT) if r.get("dataset") != data.name]
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
