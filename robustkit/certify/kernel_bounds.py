"""Sound enclosures of kernel expansions ``f_p(z) = sum_i c_ip k(z, s_i) + b_p`` over boxes.

Two bounds are computed per box and the tighter side of each is kept:

* **Interval**: each kernel value gets an exact range over the z-box: for RBF,
  ``||z - s||^2`` is a sum of per-coordinate squares whose range over an interval is exact
  (the distance of s_d to the interval, and its farther end); for poly/linear/sigmoid,
  ``<z, s>`` is linear, so its range over a box is exact, and the monotone or even power
  maps it. Summed with the signs of the coefficients (centre/radius form).
* **Mean value**: ``f(x) = f(c) + grad f(xi) . (x - c)`` for some xi in the box (c its
  centre), so ``|f(x) - f(c)| <= sum_d r_d max |d_d f(box)|``, with an interval enclosure
  of the gradient over the box (products and sums of the enclosures above), pulled back
  through the affine front end. First-order exact: it keeps the cancellation between
  support vectors that the interval bound loses, and it is exact for the linear kernel.

Both are enclosures of the exact real value; all arithmetic is float64.
"""
from __future__ import annotations

import torch

from robustkit.certify.front import Affine

F64 = torch.float64


def power(lo: torch.Tensor, hi: torch.Tensor, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact range of t^p (integer p >= 0) for t in [lo, hi]."""
    if p == 0:
        return torch.ones_like(lo), torch.ones_like(hi)
    a, b = lo ** p, hi ** p
    if p % 2:
        return a, b
    low = torch.where((lo <= 0) & (hi >= 0), torch.zeros_like(a), torch.minimum(a, b))
    return low, torch.maximum(a, b)


def kernel_values(spec: dict, sv: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Kernel values (B, n) at points z (B, d), float64."""
    dot = z @ sv.T
    kind, g = spec["kernel"], spec["gamma"]
    if kind == "linear":
        return dot
    if kind == "poly":
        return (g * dot + spec["coef0"]) ** spec["degree"]
    if kind == "sigmoid":
        return torch.tanh(g * dot + spec["coef0"])
    sq = (z * z).sum(1, keepdim=True) - 2 * dot + (sv * sv).sum(1)
    return torch.exp(-g * sq.clamp_min(0))


def _rbf(spec: dict, sv: torch.Tensor, zl: torch.Tensor, zh: torch.Tensor
         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(k_lo, k_hi) (B, n) and the enclosure (lo, hi) (B, n, d) of k_i (z_d - s_id)."""
    dl = zl[:, None, :] - sv[None]
    dh = zh[:, None, :] - sv[None]
    far = torch.maximum(dl * dl, dh * dh).sum(-1)
    near = (dl.clamp_min(0) + (-dh).clamp_min(0)).square().sum(-1)
    kl, kh = torch.exp(-spec["gamma"] * far), torch.exp(-spec["gamma"] * near)
    k1, k2 = kl[..., None], kh[..., None]
    return kl, kh, torch.minimum(k1 * dl, k2 * dl), torch.maximum(k1 * dh, k2 * dh)


def _dot_kernel(spec: dict, sv: torch.Tensor, zl: torch.Tensor, zh: torch.Tensor
                ) -> tuple[torch.Tensor, ...]:
    """(k_lo, k_hi) (B, n) and the enclosure (lo, hi) (B, n) of T with dk/dz = T s
    (T = gamma k'(t) at t = gamma <z, s> + coef0; 1 for the linear kernel)."""
    zc, zr = (zl + zh) / 2, (zh - zl) / 2
    tc, tr = zc @ sv.T, zr @ sv.abs().T
    kind = spec["kernel"]
    if kind == "linear":
        one = torch.ones_like(tc)
        return tc - tr, tc + tr, one, one
    g, c0 = spec["gamma"], spec["coef0"]
    tl, th = g * (tc - tr) + c0, g * (tc + tr) + c0
    if kind == "poly":
        p = spec["degree"]
        kl, kh = power(tl, th, p)
        if p == 0:
            zero = torch.zeros_like(tl)
            return kl, kh, zero, zero
        dl, dh = power(tl, th, p - 1)
        return kl, kh, p * g * dl, p * g * dh
    kl, kh = torch.tanh(tl), torch.tanh(th)
    sq_far = torch.maximum(kl * kl, kh * kh)
    sq_near = torch.where((tl <= 0) & (th >= 0), torch.zeros_like(kl),
                          torch.minimum(kl * kl, kh * kh))
    return kl, kh, g * (1 - sq_far), g * (1 - sq_near)


def expansion_bounds(spec: dict, sv: torch.Tensor, coef: torch.Tensor, bias: torch.Tensor,
                     front: Affine, lo: torch.Tensor, hi: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bounds of the expansions over input boxes.

    Args:
        spec: kernel parameters (``kernel``, ``gamma``, ``degree``, ``coef0``).
        sv: support vectors (n, d) in z space; coef: (B, n, P) per box or (n, P) shared;
        bias: (B, P) or (P,).
        front: z = front(x) on flattened inputs; lo, hi: input boxes (B, D).

    Returns:
        (lower, upper) (B, P) sound bounds of each f_p over each box, ``scale`` (B, P) the
        magnitude sum_i |c_ip| max k_i + |b_p| (for rounding slack), and ``spread`` (B, P, D)
        the per-coordinate contributions r_d max |d_d f_p| of the mean-value bound (where a
        split helps most).
    """
    shared = coef.dim() == 2
    zl, zh = front.box(lo, hi)
    xc, xr = (lo + hi) / 2, (hi - lo) / 2
    acoef = coef.abs()
    mm = "np" if shared else "bnp"
    if spec["kernel"] == "rbf":
        kl, kh, pl, ph = _rbf(spec, sv, zl, zh)
        gc = -2 * spec["gamma"] * torch.einsum(f"bnd,{mm}->bpd", (pl + ph) / 2, coef)
        gr = 2 * spec["gamma"] * torch.einsum(f"bnd,{mm}->bpd", (ph - pl) / 2, acoef)
    else:
        kl, kh, tl, th = _dot_kernel(spec, sv, zl, zh)
        gc = torch.einsum(f"bn,{mm},nd->bpd", (tl + th) / 2, coef, sv)
        gr = torch.einsum(f"bn,{mm},nd->bpd", (th - tl) / 2, acoef, sv.abs())
    kc, kr = (kl + kh) / 2, (kh - kl) / 2
    def contract(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b if shared else torch.einsum("bn,bnp->bp", a, b)

    naive_c, naive_r = contract(kc, coef) + bias, contract(kr, acoef)
    gxc, gxr = front.pull(gc, gr)
    spread = xr[:, None, :] * (gxc.abs() + gxr)
    at_c = contract(kernel_values(spec, sv, front.apply(xc)), coef) + bias
    mv_r = spread.sum(-1)
    lower = torch.maximum(naive_c - naive_r, at_c - mv_r)
    upper = torch.minimum(naive_c + naive_r, at_c + mv_r)
    scale = contract(torch.maximum(kl.abs(), kh.abs()), acoef) + bias.abs()
    return lower, upper, scale, spread
