"""The orthonormal DCT-II as a differentiable torch op (matrix products, any device/dtype).

Akhtar et al. detect universal perturbations in the DCT domain; attacks that adapt to
such a detector need gradients through the transform, hence matrices rather than FFTs
from scipy. ``dct2`` equals ``scipy.fft.dctn(x, type=2, axes=(-2, -1), norm="ortho")``.
"""
from __future__ import annotations

import math

import torch


def dct_matrix(n: int, *, dtype: torch.dtype = torch.float32,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """The (n, n) orthonormal DCT-II matrix C, so that ``C @ x`` transforms a length-n x.

    C[k, i] = s_k cos(pi (2 i + 1) k / (2 n)) with s_0 = sqrt(1 / n), s_k = sqrt(2 / n);
    C is orthogonal (C @ C.T = I), so the inverse transform is ``C.T @ X``.

    Args:
        n: signal length (>= 1).
        dtype, device: of the returned matrix.

    Returns:
        Tensor (n, n).

    Example:
        >>> c = dct_matrix(4, dtype=torch.float64)
        >>> bool(torch.allclose(c @ c.T, torch.eye(4, dtype=torch.float64)))
        True
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    i = torch.arange(n, dtype=torch.float64)
    k = i[:, None]
    c = torch.cos(math.pi * (2 * i[None, :] + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    c[0] /= math.sqrt(2.0)
    return c.to(dtype=dtype, device=device)


def _check(x: torch.Tensor, dims: int) -> None:
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {type(x).__name__}")
    if x.dim() < dims:
        raise ValueError(f"x needs at least {dims} dimension(s), got shape {tuple(x.shape)}")


def dct(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 1-D DCT-II along the last dimension (``scipy.fft.dct(norm="ortho")``).

    Example:
        >>> x = torch.rand(3, 5)
        >>> bool(torch.allclose(idct(dct(x)), x, atol=1e-6))
        True
    """
    _check(x, 1)
    return x @ dct_matrix(x.shape[-1], dtype=x.dtype, device=x.device).T


def idct(coef: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dct` along the last dimension (DCT-III, orthonormal)."""
    _check(coef, 1)
    return coef @ dct_matrix(coef.shape[-1], dtype=coef.dtype, device=coef.device)


def dct2(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D DCT-II over the last two dimensions: C_H @ x @ C_W^T.

    Args:
        x: float tensor (..., H, W), e.g. images (N, C, H, W).

    Returns:
        Coefficients with x's shape; ``coef[..., 0, 0]`` is the (scaled) mean.

    Example:
        >>> x = torch.rand(2, 1, 8, 8)
        >>> bool(torch.allclose(idct2(dct2(x)), x, atol=1e-6))
        True
    """
    _check(x, 2)
    ch = dct_matrix(x.shape[-2], dtype=x.dtype, device=x.device)
    cw = dct_matrix(x.shape[-1], dtype=x.dtype, device=x.device)
    return ch @ x @ cw.T


def idct2(coef: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dct2`: C_H^T @ coef @ C_W."""
    _check(coef, 2)
    ch = dct_matrix(coef.shape[-2], dtype=coef.dtype, device=coef.device)
    cw = dct_matrix(coef.shape[-1], dtype=coef.dtype, device=coef.device)
    return ch.T @ coef @ cw
