"""Square attack's windows and random signs, and its L2 update (Andriushchenko et al.
2020, sec. 3.2): the start, a grid of pseudo-Gaussian blocks, and each query's move of two
windows' mass into one window shaped as two pseudo-Gaussian halves of opposite sign."""
from __future__ import annotations

import math

import torch

from robustkit.attacks.base import project
from robustkit.attacks.rng import SampleRNG, rand, randint


def side(p: float, h: int, w: int, at_least: int = 1) -> tuple[int, int]:
    """Window (height, width) covering about a share p of an h x w plane; on a single row
    (flat inputs) a run of sqrt(p * w) features, as the original Square windows a
    (1, 1, D) input."""
    if h == 1:
        return 1, min(max(round(math.sqrt(p * w)), at_least, 1), max(w - 1, 1))
    s = min(max(round(math.sqrt(p * h * w)), at_least, 1), max(min(h, w) - 1, 1))
    return s, s


def windows(n: int, h: int, w: int, sh: int, sw: int, gen: SampleRNG,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample random window positions: (mask (n, 1, h, w) bool, row offsets, col offsets)
    of each pixel relative to its sample's window corner."""
    r0 = randint(gen, 0, h - sh + 1, (n, 1, 1, 1), device=device)
    c0 = randint(gen, 0, w - sw + 1, (n, 1, 1, 1), device=device)
    rows = torch.arange(h, device=device).view(1, 1, h, 1) - r0
    cols = torch.arange(w, device=device).view(1, 1, 1, w) - c0
    mask = (rows >= 0) & (rows < sh) & (cols >= 0) & (cols < sw)
    return mask, rows, cols


def signs(shape: tuple, gen: SampleRNG, like: torch.Tensor) -> torch.Tensor:
    u = rand(gen, shape, device=like.device, dtype=like.dtype)
    return torch.where(u < 0.5, -1.0, 1.0).to(like.dtype)


def pseudo_gaussian(sh: int, sw: int, device: torch.device, dtype: torch.dtype
                    ) -> torch.Tensor:
    """A window of unit L2 norm whose entries grow toward its center in concentric
    (Chebyshev) rings: sum_{k >= ring} 1 / (k + 1)^2 (the paper's eta)."""
    ch, cw = (sh - 1) / 2, (sw - 1) / 2
    rr = torch.arange(sh, device=device, dtype=dtype).view(-1, 1)
    cc = torch.arange(sw, device=device, dtype=dtype).view(1, -1)
    ring = torch.maximum((rr - ch).abs(), (cc - cw).abs()).floor()
    top = int(ring.max()) + 1
    tail = (1.0 / torch.arange(1, top + 1, device=device, dtype=dtype) ** 2).flip(0).cumsum(0)
    pat = tail.flip(0)[ring.long()]
    return pat / pat.norm()


def meta_pattern(sh: int, sw: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The paper's update shape: two pseudo-Gaussian halves of opposite sign, split along
    the window's longer side, unit L2 norm."""
    along_cols = sw > sh or (sw == sh and sw > 1)
    size = sw if along_cols else sh
    if size == 1:
        return torch.ones(sh, sw, device=device, dtype=dtype)
    a = size // 2
    if along_cols:
        pat = torch.cat([pseudo_gaussian(sh, a, device, dtype),
                         -pseudo_gaussian(sh, sw - a, device, dtype)], dim=1)
    else:
        pat = torch.cat([pseudo_gaussian(a, sw, device, dtype),
                         -pseudo_gaussian(sh - a, sw, device, dtype)], dim=0)
    return pat / pat.norm()


def _place(pat: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
           ) -> torch.Tensor:
    """The (sh, sw) pattern placed at each sample's window: (n, 1, h, w), 0 outside."""
    sh, sw = pat.shape
    idx = rows.clamp(0, sh - 1) * sw + cols.clamp(0, sw - 1)
    return pat.flatten()[idx] * mask


def _l2_scale(delta: torch.Tensor, eps: float) -> torch.Tensor:
    norm = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return delta * (eps / norm)


def l2_init(x: torch.Tensor, eps: float, gen: SampleRNG) -> torch.Tensor:
    # a grid of pseudo-Gaussian blocks with random signs per (sample, channel, block)
    n, c, h, w = x.shape
    bh, bw = (1, max(w // 5, 1)) if h == 1 else (max(h // 5, 1), max(w // 5, 1))
    gh, gw = h // bh, w // bw
    sign = signs((n, c, gh, gw), gen, x).repeat_interleave(bh, 2).repeat_interleave(bw, 3)
    tile = pseudo_gaussian(bh, bw, x.device, x.dtype).repeat(gh, gw)
    delta = torch.zeros_like(x)
    delta[:, :, :gh * bh, :gw * bw] = sign * tile
    return (x + project(_l2_scale(delta, eps), eps, "l2")).clamp(0, 1)


def l2_candidate(x: torch.Tensor, best: torch.Tensor, eps: float, p: float,
                  gen: SampleRNG) -> torch.Tensor:
    n, c, h, w = x.shape
    sh, sw = side(p, h, w, at_least=3)
    if sh > 1 and sh % 2 == 0 and sh + 1 < min(h, w):
        sh = sw = sh + 1
    delta = best - x
    m1, r1, c1 = windows(n, h, w, sh, sw, gen, x.device)
    m2, _, _ = windows(n, h, w, sh, sw, gen, x.device)
    pat = meta_pattern(sh, sw, x.device, x.dtype)
    new = _place(pat, m1, r1, c1)
    if sh == sw and sh > 1:  # the split runs either way at random
        flip = rand(gen, (n, 1, 1, 1), device=x.device) < 0.5
        new = torch.where(flip, _place(pat.T.contiguous(), m1, r1, c1), new)
    new = new * signs((n, c, 1, 1), gen, x)
    old = delta * m1
    old_norm = old.flatten(2).norm(dim=2).view(n, c, 1, 1)
    new = new + old / (old_norm + 1e-10)
    union = (delta * (m1 | m2)).flatten(2).norm(dim=2).view(n, c, 1, 1)
    total = delta.flatten(1).norm(dim=1).view(n, 1, 1, 1)
    # the window gets the mass of both windows plus the unused budget, spread over channels
    room = ((eps ** 2 - total ** 2).clamp_min(0) / c + union ** 2).sqrt()
    new = new / new.flatten(2).norm(dim=2).view(n, c, 1, 1).clamp_min(1e-12) * room
    delta = torch.where(m1, new, torch.where(m2, torch.zeros_like(delta), delta))
    return (x + project(_l2_scale(delta, eps), eps, "l2")).clamp(0, 1)
