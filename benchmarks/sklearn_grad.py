"""Input gradients of a user's fitted scikit-learn SVC: from_sklearn's module vs ART.

The same fitted ``SVC(kernel="rbf")`` (digits, 10 classes, libsvm one-vs-one) is wrapped
twice: ART's ``ScikitlearnSVC`` (``class_gradient`` for all classes, ``loss_gradient`` of
its hinge-type loss; Python loops over samples, classes and support vectors) and
``robustkit.models.from_sklearn`` (float64 torch module whose logits are the estimator's
ovr decision function; gradients of all K logits through one batched backward pass, and of
the cross-entropy loss, for the whole test set). ART is timed on fewer samples (it is
slow); times are per sample. The two differentiate different functions of the same model
(ART: its own one-vs-one gradient scheme; robustkit: the ovr decision function), so the
exactness check is on a binary SVC, where both differentiate ``decision_function`` f:
ART's class-1 gradient is grad f, robustkit's logits are [-f/2, f/2]; both are compared
with central finite differences of ``svc.decision_function``.

Usage: python benchmarks/sklearn_grad.py [--threads 1]  ->  benchmarks/results/sklearn_grad.csv
"""
from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch
from attacks_common import cpu_clock, load, median_times, peer
from attacks_svm_grad import _finite_differences, class_gradients
from common import RESULTS, device_name, write_csv
from threadpoolctl import threadpool_limits

from robustkit.models import from_sklearn

N_ART = 20
PAIR = (3, 8)


def loss_gradient(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Input gradient (N, D) of the summed cross-entropy of the logits."""
    xg = x.detach().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model(xg), y, reduction="sum")
    (g,) = torch.autograd.grad(loss, xg)
    return g.flatten(1)


def timing(base: dict[str, Any], device: torch.device) -> list[dict[str, Any]]:
    from art.estimators.classification.scikitlearn import ScikitlearnSVC
    from sklearn.svm import SVC

    data = load("digits")
    xtr = data.train.x.flatten(1).double().numpy()
    svc = SVC(kernel="rbf", C=10.0).fit(xtr, data.train.y.numpy())
    art = ScikitlearnSVC(svc, clip_values=(0.0, 1.0))
    xa = data.test.x[:N_ART].flatten(1).double().numpy()
    ya = np.eye(10)[data.test.y[:N_ART].numpy()]
    t_art = median_times({"class_gradient": lambda: art.class_gradient(xa),
                          "loss_gradient": lambda: art.loss_gradient(xa, ya)},
                         repeats=3, warmup=0)
    model = from_sklearn(svc, input_shape=data.test.x.shape[1:]).to(device)
    x64, y = data.test.x.double().to(device), data.test.y.to(device)
    ours = median_times({"class_gradient": lambda: class_gradients(model, x64),
                         "loss_gradient": lambda: loss_gradient(model, x64, y)}, repeats=10)
    n_sv = int(svc.support_vectors_.shape[0])
    common = {**base, "benchmark": "sklearn_grad", "dataset": "digits", "model": "SVC rbf",
              "n_sv": n_sv}
    rows = []
    for what in ("class_gradient", "loss_gradient"):
        art_per, our_per = t_art[what] / N_ART, ours[what] / len(x64)
        rows.append({**common, "method": "art", "gradient": what, "n": N_ART,
                     "ms_per_sample": round(art_per * 1e3, 4), "speedup": 1.0})
        rows.append({**common, "method": "robustkit from_sklearn (float64)", "gradient": what,
                     "n": len(x64), "ms_per_sample": round(our_per * 1e3, 5),
                     "speedup": round(art_per / our_per, 1)})
    return rows


def exactness(base: dict[str, Any]) -> list[dict[str, Any]]:
    from art.estimators.classification.scikitlearn import ScikitlearnSVC
    from sklearn.svm import SVC

    data = load("digits")
    tr, te = (np.isin(d.y.numpy(), PAIR) for d in (data.train, data.test))
    xb = data.train.x.flatten(1).double().numpy()[tr]
    yb = (data.train.y.numpy()[tr] == PAIR[1]).astype(np.int64)
    svc = SVC(kernel="rbf", C=10.0).fit(xb, yb)
    xq = data.test.x.flatten(1).double().numpy()[te]
    fd = _finite_differences(svc, xq)
    g_art = ScikitlearnSVC(svc, clip_values=(0.0, 1.0)).class_gradient(xq)[:, 1]
    g_ours = 2 * class_gradients(from_sklearn(svc), torch.from_numpy(xq)).numpy()[:, 1]
    common = {**base, "benchmark": "sklearn_grad", "dataset": "digits",
              "model": f"SVC rbf {PAIR[0]} vs {PAIR[1]}", "gradient": "decision_function",
              "n": len(xq), "n_sv": int(svc.support_vectors_.shape[0]),
              "grad_max_abs": float(np.abs(fd).max())}
    return [{**common, "method": "art", "max_abs_diff_fd": float(np.abs(g_art - fd).max())},
            {**common, "method": "robustkit from_sklearn (float64)",
             "max_abs_diff_fd": float(np.abs(g_ours - fd).max()),
             "max_abs_diff_art": float(np.abs(g_ours - g_art).max())}]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if peer("art") is None:
        return 1
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    device = torch.device(args.device)
    base = {"device": device_name(device), "threads": torch.get_num_threads(),
            "clock": "thread cpu" if cpu_clock() and device.type == "cpu" else "wall"}
    rows = timing(base, device) + exactness(base)
    for r in rows:
        print(r, flush=True)
    write_csv(rows, RESULTS / "sklearn_grad.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
