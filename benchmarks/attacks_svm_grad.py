"""SVM input gradients: robustkit's torch module vs ART's ScikitlearnSVC.class_gradient.

Timing (10 classes): ART wraps a multi-class scikit-learn ``SVC`` (libsvm one-vs-one, same
kernel, C and gamma as robustkit's svm) and loops in Python over samples, classes and
support vectors; robustkit differentiates its one-vs-rest ``KernelSVM`` for the whole
batch (all K class scores through one batched backward pass, or the true class's score
only). The two models are different decompositions of the same training problem, so
their support-vector counts are reported next to the times.

Exactness (two classes, digits 3 vs 8): both differentiate the decision function f of the
very same fitted binary ``SVC``. ART's sign convention for a binary SVC: it sums the
dual coefficients with the multi-class code's pair signs and then multiplies by -1, so its
class-0 gradient is -grad f and its class-1 gradient +grad f, where f =
``svc.decision_function`` (positive for ``classes_[1]``). ``KernelSVM.from_svcs([svc])``
has logits (-f, f) (float64), so class k is compared with class k. Both are also compared
with central finite differences of ``svc.decision_function`` itself (h = 1e-6).
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from attacks_common import PARAMS, Data, median_times, peer, trained

from robustkit.models.svm import DEFAULTS, KernelSVM, fit_svcs, resolve_gamma

N_ART = {"digits": 20, "mnist": 3}  # ART is slow: it times this many samples
PAIR = (3, 8)
FD_STEP = 1e-6


def run(data: Data, device: torch.device, base: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows: per-sample times (10 classes) and, on digits, the binary exactness check."""
    if peer("art") is None:
        return []
    rows = _timing(data, device, base)
    if data.name == "digits":
        rows += _binary(data, base)
    for r in rows:
        print(r, flush=True)
    return rows


def class_gradients(model: torch.nn.Module, x: torch.Tensor,
                    label: torch.Tensor | None = None) -> torch.Tensor:
    """Input gradients of all class scores (N, K, D), or of the ``label`` score (N, 1, D),
    for the whole batch: one forward and one (batched) backward pass."""
    xg = x.detach().requires_grad_(True)
    out = model(xg)
    if label is not None:
        (g,) = torch.autograd.grad(out.gather(1, label[:, None]).sum(), xg)
        return g.flatten(1)[:, None]
    k = out.shape[1]
    seed = torch.eye(k, dtype=out.dtype, device=out.device)[:, None].expand(k, len(x), k)
    (g,) = torch.autograd.grad(out, xg, grad_outputs=seed, is_grads_batched=True)
    return g.flatten(2).transpose(0, 1)


def _timing(data: Data, device: torch.device, base: dict[str, Any]) -> list[dict[str, Any]]:
    from art.estimators.classification.scikitlearn import ScikitlearnSVC
    from sklearn.svm import SVC

    params = {**DEFAULTS, **PARAMS[data.name]["svm"]}
    xtr = data.train.x.flatten(1).double().numpy()
    svc = SVC(kernel=params["kernel"], C=params["C"], gamma=resolve_gamma(params["gamma"], xtr),
              cache_size=500).fit(xtr, data.train.y.numpy())
    art = ScikitlearnSVC(svc, clip_values=(0.0, 1.0))
    n_art = N_ART[data.name]
    xa, ya = data.test.x[:n_art].flatten(1).double().numpy(), data.test.y[:n_art].numpy()
    t_art = median_times({"all": lambda: art.class_gradient(xa),
                          "one": lambda: art.class_gradient(xa, label=ya)},
                         repeats=3, warmup=0)
    model = trained(data, "svm").to(device)
    x, y = data.test.x.to(device), data.test.y.to(device)
    m64, x64 = copy.deepcopy(model).double(), x.double()
    ours = median_times({
        "all": lambda: class_gradients(model, x),
        "all64": lambda: class_gradients(m64, x64),
        "one": lambda: class_gradients(model, x, y)}, repeats=20)
    common = {**base, "benchmark": "svm_grad", "dataset": data.name, "model": "svm"}
    rows = [{**common, "method": "art", "classes": "all", "n": n_art,
             "n_sv": int(svc.support_vectors_.shape[0]),
             "ms_per_sample": round(t_art["all"] / n_art * 1e3, 4), "speedup": 1.0},
            {**common, "method": "art", "classes": "true label", "n": n_art,
             "n_sv": int(svc.support_vectors_.shape[0]),
             "ms_per_sample": round(t_art["one"] / n_art * 1e3, 4), "speedup": 1.0}]
    for key, classes, dtype in (("all", "all", "float32"), ("all64", "all", "float64"),
                                ("one", "true label", "float32")):
        ref = t_art["one" if key == "one" else "all"] / n_art
        per = ours[key] / len(x)
        rows.append({**common, "method": f"robustkit ({dtype})", "classes": classes,
                     "n": len(x), "n_sv": int(model.support_vectors.shape[0]),
                     "ms_per_sample": round(per * 1e3, 5), "speedup": round(ref / per, 1)})
    return rows


def _binary(data: Data, base: dict[str, Any]) -> list[dict[str, Any]]:
    from art.estimators.classification.scikitlearn import ScikitlearnSVC

    params = {**DEFAULTS, **PARAMS[data.name]["svm"]}
    tr, te = (np.isin(d.y.numpy(), PAIR) for d in (data.train, data.test))
    xb = data.train.x.flatten(1).double().numpy()[tr]
    yb = (data.train.y.numpy()[tr] == PAIR[1]).astype(np.int64)
    (svc,) = fit_svcs(xb, yb, n_classes=2, kernel=params["kernel"], C=params["C"],
                      gamma=resolve_gamma(params["gamma"], xb))
    module = KernelSVM.from_svcs([svc], [xb.shape[1]], 2)  # float64, logits (-f, f)
    art = ScikitlearnSVC(svc, clip_values=(0.0, 1.0))
    xq = data.test.x.flatten(1).double().numpy()[te]
    xt = torch.from_numpy(xq)
    times = median_times({"art": lambda: art.class_gradient(xq),
                          "ours": lambda: class_gradients(module, xt)}, repeats=5)
    g_art, g_ours = art.class_gradient(xq), class_gradients(module, xt).numpy()
    fd = _finite_differences(svc, xq)
    fd_both = np.stack([-fd, fd], axis=1)  # d(-f)/dx, df/dx
    common = {**base, "benchmark": "svm_grad", "dataset": data.name,
              "model": f"svm {PAIR[0]} vs {PAIR[1]}", "classes": "all", "n": len(xq),
              "n_sv": int(svc.support_vectors_.shape[0])}
    scale = float(np.abs(fd).max())
    return [
        {**common, "method": "art", "ms_per_sample": round(times["art"] / len(xq) * 1e3, 4),
         "speedup": 1.0, "max_abs_diff_fd": float(np.abs(g_art - fd_both).max()),
         "grad_max_abs": scale},
        {**common, "method": "robustkit (float64)",
         "ms_per_sample": round(times["ours"] / len(xq) * 1e3, 5),
         "speedup": round(times["art"] / times["ours"], 1),
         "max_abs_diff_art": float(np.abs(g_ours - g_art).max()),
         "max_abs_diff_fd": float(np.abs(g_ours - fd_both).max()), "grad_max_abs": scale},
    ]


def _finite_differences(svc: Any, x: np.ndarray) -> np.ndarray:
    """Central differences (N, D) of ``svc.decision_function`` at x."""
    g = np.empty_like(x)
    for j in range(x.shape[1]):
        e = np.zeros(x.shape[1])
        e[j] = FD_STEP
        g[:, j] = (svc.decision_function(x + e) - svc.decision_function(x - e)) / (2 * FD_STEP)
    return g
