"""Linear classifiers: softmax regression, linear SVM (hinge), perceptron.

Training (``solver="lbfgs"``, the default) is full-batch L-BFGS on the standardized
training set, minimizing the mean loss plus ``weight_decay / 2 * ||W||^2``: cross-entropy
from W = 0 (a convex problem). The hinge and perceptron criteria are piecewise linear (and
every separating W minimizes the perceptron criterion), so those two start from the
cross-entropy solution and L-BFGS then minimizes their own loss. ``max_iter`` bounds the
iterations of each phase. ``solver="minibatch"`` is the mini-batch loop of the other
families (``epochs``, ``lr``, ``batch_size``, ``optimizer``, ``schedule``), which
adversarial training always uses.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustkit.models._torchfit import TRAIN_CHOICES, TRAIN_DEFAULTS, TRAIN_RULES, make_fit
from robustkit.models.inputs import SHAPE_RULES, check_arch, check_input
from robustkit.models.preprocess import Standardize
from robustkit.models.registry import Family, register
from robustkit.models.training import loss_fn, seeded

LOSS_OF = {"logistic": "ce", "hinge": "hinge", "perceptron": "perceptron"}
SOLVERS = ("lbfgs", "minibatch")


class LinearModel(nn.Module):
    """logits = W standardize(x) + b.

    Args:
        input_shape: shape of one input, e.g. (1, 8, 8).
        n_classes: number of classes K (logits are (N, K), also for K = 2).
    """

    def __init__(self, input_shape: list[int], n_classes: int) -> None:
        super().__init__()
        check_arch("linear", {"input_shape": input_shape, "n_classes": n_classes}, SHAPE_RULES)
        self.arch: dict[str, Any] = {"input_shape": list(input_shape), "n_classes": int(n_classes)}
        dim = math.prod(input_shape)
        self.standardize = Standardize(dim)
        self.linear = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.arch["input_shape"], "linear")
        # dtype: the input is cast to the parameters' (float32), gradients flow back in x's
        return self.linear(self.standardize(x.to(self.linear.weight.dtype)))


def _build(x: torch.Tensor, n_classes: int, params: dict) -> LinearModel:
    m = LinearModel(list(x.shape[1:]), n_classes)
    m.standardize.fit(x)
    return m


_minibatch = make_fit(_build, loss=lambda p: LOSS_OF[p["loss"]])


def _fit(x: torch.Tensor, y: torch.Tensor, *, n_classes: int, params: dict, seed: int,
         device: torch.device, progress: bool) -> nn.Module:
    # epochs=0 asks for the initialized module (adversarial training starts from it).
    if params["solver"] == "minibatch" or int(params["epochs"]) == 0:
        return _minibatch(x, y, n_classes=n_classes, params=params, seed=seed, device=device,
                          progress=progress)
    max_iter = params["max_iter"]
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"linear: max_iter={max_iter!r} is not valid; expected a positive "
                         "integer")
    with seeded(seed):
        module = _build(x, n_classes, params).to(device)
    with torch.no_grad():
        z = module.standardize(x.to(device))
        module.linear.weight.zero_()
        module.linear.bias.zero_()
    y = y.to(device)
    wd = float(params["weight_decay"])
    lbfgs(module.linear, z, y, "ce", weight_decay=wd, max_iter=max_iter)
    if params["loss"] != "logistic":
        lbfgs(module.linear, z, y, LOSS_OF[params["loss"]], weight_decay=wd, max_iter=max_iter)
    return module.eval()


def lbfgs(linear: nn.Linear, z: torch.Tensor, y: torch.Tensor, loss: str, *,
          weight_decay: float, max_iter: int) -> nn.Linear:
    """Minimize ``loss_fn(loss, linear(z), y) + weight_decay / 2 * ||W||^2`` in place with
    full-batch L-BFGS from the current weights.

    scipy's L-BFGS-B drives float64 copies of (W, b) and torch computes the loss and its
    gradient on z's device: constructing any ``torch.optim`` optimizer imports
    ``torch._dynamo`` (seconds, once per process), longer than this whole fit. BLAS is
    held to one thread: L-BFGS-B's small products are slower threaded, much slower on a
    busy machine.
    """
    from scipy.optimize import minimize
    from threadpoolctl import threadpool_limits

    z64 = z.double()
    w_shape, k = tuple(linear.weight.shape), linear.weight.shape[0]
    n_w = k * w_shape[1]

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        t = torch.from_numpy(theta).to(z.device).requires_grad_(True)
        w, b = t[:n_w].reshape(w_shape), t[n_w:]
        value = loss_fn(loss, F.linear(z64, w, b), y) + weight_decay / 2 * w.pow(2).sum()
        grad, = torch.autograd.grad(value, t)
        return float(value.detach()), grad.cpu().numpy()

    start = torch.cat([linear.weight.detach().flatten(), linear.bias.detach()])
    with torch.enable_grad(), threadpool_limits(1):
        res = minimize(fun, start.double().cpu().numpy(), jac=True, method="L-BFGS-B",
                       options={"maxiter": max_iter, "maxfun": 2 * max_iter, "maxcor": 20})
    theta = torch.from_numpy(res.x).to(linear.weight.device, linear.weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(theta[:n_w].reshape(w_shape))
        linear.bias.copy_(theta[n_w:])
    return linear


register(Family(
    name="linear",
    defaults={"loss": "logistic", "solver": "lbfgs", "max_iter": 50, **TRAIN_DEFAULTS,
              "epochs": 40, "lr": 1e-2, "weight_decay": 1e-4},
    choices={"loss": tuple(LOSS_OF), "solver": SOLVERS, **TRAIN_CHOICES},
    rules=TRAIN_RULES,
    fit=_fit,
    module=LinearModel,
    doc="linear classifier: loss logistic (softmax regression), hinge (linear SVM), "
        "perceptron; full-batch L-BFGS (solver=lbfgs, max_iter) or mini-batch",
))
