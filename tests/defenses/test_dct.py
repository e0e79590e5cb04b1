"""The DCT op: equal to scipy's orthonormal DCT-II, orthonormal, invertible, differentiable."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import torch

from robustkit.defenses.dct import dct, dct2, dct_matrix, idct, idct2


@pytest.mark.parametrize("shape", [(3, 1, 8, 8), (2, 3, 5, 7), (28, 28)])
def test_dct2_matches_scipy(shape):
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    want = scipy.fft.dctn(x.numpy(), type=2, axes=(-2, -1), norm="ortho")
    np.testing.assert_allclose(dct2(x).numpy(), want, atol=1e-12)
    np.testing.assert_allclose(idct2(dct2(x)).numpy(), x.numpy(), atol=1e-12)


def test_dct_1d_matches_scipy_and_inverts():
    x = torch.rand(4, 13, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    want = scipy.fft.dct(x.numpy(), type=2, axis=-1, norm="ortho")
    np.testing.assert_allclose(dct(x).numpy(), want, atol=1e-12)
    np.testing.assert_allclose(idct(dct(x)).numpy(), x.numpy(), atol=1e-12)


def test_matrix_is_orthonormal_and_preserves_energy():
    c = dct_matrix(9, dtype=torch.float64)
    torch.testing.assert_close(c @ c.T, torch.eye(9, dtype=torch.float64))
    x = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(dct2(x).square().sum(), x.square().sum())


def test_dct2_is_differentiable_with_the_transposed_gradient():
    x = torch.rand(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.rand(1, 1, 4, 4, dtype=torch.float64)
    (g,) = torch.autograd.grad((dct2(x) * w).sum(), x)
    torch.testing.assert_close(g, idct2(w))  # adjoint of an orthogonal map is its inverse


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="n must be"):
        dct_matrix(0)
    with pytest.raises(TypeError, match="floating-point"):
        dct2(torch.ones(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 2"):
        dct2(torch.ones(3))
