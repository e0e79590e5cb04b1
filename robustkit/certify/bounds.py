"""Interval bound propagation (IBP) over a layer chain, and what the network certificates
share: the input box, the margin lower bounds' rounding allowance, witnesses from a cheap
attack, and the per-eps result.

IBP pushes the box ``[lo, hi]`` through each op as center and radius: an affine op maps
``(mid, rad)`` to ``(W mid + b, |W| rad)``, a ReLU clamps both ends. The last affine group
(everything after the last ReLU) is folded with the margin differences
``logit_y - logit_j`` before the radius is taken, which is tighter than subtracting
intervals of the logits (Gowal et al. 2018). The ops keep the module's parameters, so
the bounds are differentiable: :mod:`robustkit.defenses.certified` trains on them.

For L2 the box is the ball's bounding box ``[x - eps, x + eps]`` (cut to [0, 1]): sound,
and loose in high dimension; CROWN and MILP concretize exactly over the L2 ball.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from robustkit.attacks.pgd import pgd
from robustkit.certify.base import CertifyResult, verify_witness
from robustkit.certify.layers import Affine, Op

Tensor = torch.Tensor
PAIR_ENTRIES = 1 << 22  # K^2 x H numbers of every class pair's margin row (32 MB in float64)


def input_box(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """The eps-box around x cut to [0, 1] (the Linf ball in the box; it holds the L2 ball)."""
    return (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)


def ibp(ops: list[Op], lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Bounds of the chain's output over the box [lo, hi] (differentiable)."""
    for op in ops:
        if op == "relu":
            lo, hi = lo.clamp_min(0), hi.clamp_min(0)
        else:
            mid, rad = (hi + lo) / 2, (hi - lo) / 2
            mid, rad = op.fn(mid), op.abs_fn(rad)  # type: ignore[union-attr]
            lo, hi = mid - rad, mid + rad
    return lo, hi


def split_head(ops: list[Op]) -> tuple[list[Op], list[Affine]]:
    """(ops up to and including the last ReLU, the affine ops after it)."""
    cut = max((i + 1 for i, op in enumerate(ops) if op == "relu"), default=0)
    return ops[:cut], ops[cut:]  # type: ignore[return-value]


def head_matrix(head: list[Affine], h: Tensor) -> tuple[Tensor, Tensor]:
    """(W (K, H), b (K,)) of the affine head for inputs shaped like h (N, ...), in h's
    dtype, differentiable in the parameters when gradients are on: one pass of the identity
    basis through the head when it is small, else K backward passes at 0."""
    train = torch.is_grad_enabled()
    dim = h[0].numel()
    if dim * (dim + 1) <= 4_000_000:
        basis = torch.cat([torch.zeros(1, dim, dtype=h.dtype, device=h.device),
                           torch.eye(dim, dtype=h.dtype, device=h.device)])
        out = basis.reshape(dim + 1, *h.shape[1:])
        for op in head:
            out = op.fn(out)
        out = out.flatten(1)
        return (out[1:] - out[:1]).T, out[0]
    with torch.enable_grad():
        zero = torch.zeros((1,) + tuple(h.shape[1:]), dtype=h.dtype, device=h.device,
                           requires_grad=True)
        out = zero
        for op in head:
            out = op.fn(out)
        b = out.reshape(-1)
        rows = [torch.autograd.grad(b[k], zero, retain_graph=True, create_graph=train)[0]
                for k in range(len(b))]
    w = torch.stack([r.reshape(-1) for r in rows])
    return (w, b) if train else (w.detach(), b.detach())


def others(y: Tensor, k: int) -> Tensor:
    """(N, K-1): the classes other than y, in order."""
    idx = torch.arange(k, device=y.device).expand(len(y), k)
    return idx[idx != y[:, None]].reshape(len(y), k - 1)


def ibp_margins(ops: list[Op], x: Tensor, y: Tensor, eps: float) -> Tensor:
    """IBP lower bounds (N, K-1) of ``logit_y - logit_j`` over the eps-box of x (in x's
    dtype; differentiable)."""
    body, head = split_head(ops)
    lo, hi = ibp(body, *input_box(x, eps))
    w, b = head_matrix(head, lo)
    k = w.shape[0]
    oth = others(y, k)
    mid, rad = ((hi + lo) / 2).flatten(1), ((hi - lo) / 2).flatten(1)
    if k * k * w.shape[1] > PAIR_ENTRIES:  # too many class pairs: rows per sample
        wm = w[y][:, None, :] - w[oth]
        bm = b[y][:, None] - b[oth]
        return (wm @ mid[:, :, None])[..., 0] + bm - (wm.abs() @ rad[:, :, None])[..., 0]
    # every class pair's row w_i - w_j once (K^2 rows), two GEMMs, then each sample's pairs
    wd = (w[:, None, :] - w[None, :, :]).flatten(0, 1)
    all_pairs = mid @ wd.T - rad @ wd.abs().T + (b[:, None] - b[None, :]).flatten()
    return all_pairs.gather(1, y[:, None] * k + oth)


def allowance(model: nn.Module, logits: Tensor, depth: int, width: int) -> Tensor:
    """Margin a certificate must exceed (N,): a bound on the rounding of the model's own
    forward pass, ``4 sqrt(width) depth u (1 + max |logit|)`` (u: the unit roundoff of its
    parameters' dtype)."""
    dtypes = {t.dtype for t in list(model.parameters()) + list(model.buffers())
              if t.is_floating_point()}
    u = torch.finfo(torch.float64 if dtypes == {torch.float64} else torch.float32).eps / 2
    return 4 * math.sqrt(width) * depth * u * (1 + logits.double().abs().amax(1))


def attack_witness(model: nn.Module, x: Tensor, y: Tensor, eps: float, norm: str,
                   todo: Tensor, steps: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """(broken, x_adv): PGD (``steps`` steps, margin loss) on the samples ``todo``, its
    points verified on the model; x where none."""
    x_adv = x.clone()
    broken = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    if steps < 1 or eps <= 0 or not bool(todo.any()):
        return broken, x_adv
    idx = todo.nonzero().flatten()
    r = pgd(model, x[idx], y[idx], eps=eps, norm=norm, steps=steps, loss="margin", seed=seed)
    ok = verify_witness(model, x[idx], y[idx], r.x_adv, eps, norm)
    broken[idx[ok]] = True
    x_adv[idx[ok]] = r.x_adv[ok]
    return broken, x_adv


def result(*, eps: float, norm: str, method: str, certified: Tensor, broken: Tensor,
           x_adv: Tensor, x: Tensor, correct: Tensor, seconds: Tensor, reasons: list[str],
           info: dict) -> CertifyResult:
    """The per-eps result: misclassified samples broken at x, radius eps where certified
    (a sound lower bound of the minimal distance), 0 where misclassified, NaN elsewhere."""
    broken = broken | ~correct
    shape = (-1,) + (1,) * (x.dim() - 1)
    x_adv = torch.where((broken & correct).reshape(shape), x_adv, x)
    certified = certified & correct & ~broken
    radius = torch.full((len(x),), math.nan, dtype=torch.float64)
    radius[certified.cpu()] = eps
    radius[~correct.cpu()] = 0.0
    reasons = ["" if c or b else r for c, b, r in
               zip(certified.tolist(), broken.tolist(), reasons)]
    return CertifyResult(eps=eps, norm=norm, certified=certified, broken=broken, x_adv=x_adv,
                         radius=radius, seconds=seconds, method=method,
                         reasons=tuple(reasons), info=info)
