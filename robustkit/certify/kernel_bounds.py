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

* **Linear relaxation** (RBF only, in the spirit of CROWN): each ``k_i = exp(-gamma q_i)``
  with ``q_i = ||z - s_i||^2`` is bounded by linear functions of z: below by the tangent of
  the convex exp at q_i(centre), composed with the chord of each convex square over its
  interval (an upper bound of q_i); above by the chord of exp over [q_min, q_max],
  composed with the tangent plane of q_i at the centre (a lower bound of q_i). Summed with
  the coefficients' signs, f is bounded below by one linear function of x, minimized over
  the box in closed form: the shared coordinates cancel across support vectors before the
  box is applied, which is what makes this bound tight in high dimension.

All are enclosures of the exact real value; all arithmetic is float64.
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
         ) -> tuple[torch.Tensor, ...]:
    """(k_lo, k_hi) (B, n), the enclosure (lo, hi) (B, n, d) of k_i (z_d - s_id), and the
    exact range (near, far) (B, n) of ||z - s_i||^2."""
    dl = zl[:, None, :] - sv[None]
    dh = zh[:, None, :] - sv[None]
    far = torch.maximum(dl * dl, dh * dh).sum(-1)
    near = (dl.clamp_min(0) + (-dh).clamp_min(0)).square().sum(-1)
    kl, kh = torch.exp(-spec["gamma"] * far), torch.exp(-spec["gamma"] * near)
    k1, k2 = kl[..., None], kh[..., None]
    return (kl, kh, torch.minimum(k1 * dl, k2 * dl), torch.maximum(k1 * dh, k2 * dh), near,
            far)


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


def _rbf_linear_lower(spec: dict, sv: torch.Tensor, coef: torch.Tensor, bias: torch.Tensor,
                      front: Affine, lo: torch.Tensor, hi: torch.Tensor, zl: torch.Tensor,
                      zh: torch.Tensor, near: torch.Tensor, far: torch.Tensor) -> torch.Tensor:
    """Lower bound (B, P) of f over the boxes by the linear relaxation (module docstring);
    ``near``/``far``: exact (B, n) ranges of q_i; coef (B, n, P)."""
    g = spec["gamma"]
    zc = (zl + zh) / 2
    xc, xr = (lo + hi) / 2, (hi - lo) / 2
    diff = zc[:, None, :] - sv[None]  # (B, n, d)
    q0 = (diff * diff).sum(-1)
    k0 = torch.exp(-g * q0)
    width = far - near
    k_near, k_far = torch.exp(-g * near), torch.exp(-g * far)
    chord = torch.where(width > 1e-9, (k_far - k_near) / width.clamp_min(1e-300), -g * k_far)
    chord = torch.maximum(chord, -g * k_far)
    pos, neg = coef.clamp_min(0), coef.clamp_max(0)
    # a_i > 0: k_i >= k0 (1 - g (U_i(z) - q0)), U_i(z) = (zl + zh - 2 s_i) z + |s_i|^2 - zl zh
    alpha = pos * (-g * k0)[..., None]  # coefficient of U_i
    const_pos = (pos * (k0 * (1 + g * q0))[..., None]).sum(1)
    # a_i < 0: k_i <= k(q_min) + chord (T_i(z) - q_min), T_i(z) = 2 (zc - s_i) z + |zc - s_i|^2
    #          - 2 (zc - s_i) zc
    beta = neg * chord[..., None]  # coefficient of T_i
    const_neg = (neg * (k_near - chord * near)[..., None]).sum(1)
    sa, sb = alpha.sum(1), beta.sum(1)  # (B, P)
    sv_sq = (sv * sv).sum(1)
    u0 = sv_sq[None] - (zl * zh).sum(1, keepdim=True)  # (B, n)
    t0 = q0 - 2 * (diff * zc[:, None, :]).sum(-1)
    w = (sa[..., None] * (zl + zh)[:, None, :] + 2 * sb[..., None] * zc[:, None, :]
         - 2 * torch.einsum("bnp,nd->bpd", alpha + beta, sv))  # (B, P, d)
    w0 = (const_pos + const_neg + torch.einsum("bnp,bn->bp", alpha, u0)
          + torch.einsum("bnp,bn->bp", beta, t0) + bias)
    # min over the input box of w . (A x + a) + w0
    wx, _ = front.pull(w, torch.zeros_like(w))
    return w0 + (w * front.bias).sum(-1) + (wx * xc[:, None, :]).sum(-1) \
        - (wx.abs() * xr[:, None, :]).sum(-1)


def expansion_bounds(spec: dict, sv: torch.Tensor, coef: torch.Tensor, bias: torch.Tensor,
                     front: Affine, lo: torch.Tensor, hi: torch.Tensor,
                     magnitude: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bounds of the expansions over input boxes.

    Args:
        spec: kernel parameters (``kernel``, ``gamma``, ``degree``, ``coef0``).
        sv: support vectors (n, d) in z space; coef: (B, n, P) per box or (n, P) shared;
        bias: (B, P) or (P,).
        front: z = front(x) on flattened inputs; lo, hi: input boxes (B, D).
        magnitude: |coefficients| the model actually adds up, like ``coef`` (default
            ``|coef|``), for ``scale``.

    Returns:
        (lower, upper) (B, P) sound bounds of each f_p over each box, ``scale`` (B, P) the
        magnitude sum_i |c_ip| max k_i (for rounding slack), and ``spread`` (B, P, D)
        the per-coordinate contributions r_d max |d_d f_p| of the mean-value bound (where a
        split helps most).
    """
    shared = coef.dim() == 2
    zl, zh = front.box(lo, hi)
    xc, xr = (lo + hi) / 2, (hi - lo) / 2
    acoef = coef.abs()
    mm = "np" if shared else "bnp"
    if spec["kernel"] == "rbf":
        kl, kh, pl, ph, near, far = _rbf(spec, sv, zl, zh)
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
    if spec["kernel"] == "rbf":
        full = coef.expand(len(lo), *coef.shape) if shared else coef
        b = bias.expand(len(lo), -1)
        args = (front, lo, hi, zl, zh, near, far)
        lower = torch.maximum(lower, _rbf_linear_lower(spec, sv, full, b, *args))
        upper = torch.minimum(upper, -_rbf_linear_lower(spec, sv, -full, -b, *args))
    scale = contract(torch.maximum(kl.abs(), kh.abs()), acoef if magnitude is None else magnitude)
    return lower, upper, scale, spread
