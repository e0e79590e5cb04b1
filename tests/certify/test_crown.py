"""CROWN's and IBP's batched computations against their plain textbook form.

The bounds are computed with shortcuts (shared first products, only the unstable columns
sign-split, every class pair's IBP row at once); the textbook form below makes one dense
sign split per layer and per row. The two must agree to rounding (1e-9), on nets with
many unstable ReLUs and on a digits CNN. Soundness against exact enumeration is in
test_networks.py.
"""
from __future__ import annotations

import itertools

import pytest
import torch

from robustkit.certify import bounds as bounds_module
from robustkit.certify.bounds import ibp_margins, input_box, others
from robustkit.certify.boxball import worst_l2
from robustkit.certify.crown import margin_bounds, preactivation_bounds
from robustkit.certify.dense import network
from robustkit.certify.layers import ops_of

Layers = list[tuple[torch.Tensor, torch.Tensor]]


def _min_linear(a, c, x0, eps, norm):
    if norm == "l2":
        return worst_l2(a, c, x0[:, None, :], eps)[0]
    lo, hi = input_box(x0, eps)
    return (a.clamp_min(0) @ lo[:, :, None] + a.clamp_max(0) @ hi[:, :, None])[..., 0] + c


def _textbook_backward(layers, bounds, k, lam, c, x0, eps, norm):
    for i in range(k - 1, -1, -1):
        lo, hi = bounds[i]
        unstable = (lo < 0) & (hi > 0)
        chord = hi / (hi - lo).clamp_min(1e-300)
        upper = torch.where(lo >= 0, 1.0, torch.where(unstable, chord, 0.0)).double()
        lower = torch.where((lo >= 0) | (unstable & (hi > -lo)), 1.0, 0.0).double()
        shift = torch.where(unstable, -lo * chord, torch.zeros_like(lo))
        pos, neg = lam.clamp_min(0), lam.clamp_max(0)
        c = c + (neg @ shift[:, :, None])[..., 0]
        lam = pos * lower[:, None, :] + neg * upper[:, None, :]
        w, b = layers[i]
        c, lam = c + lam @ b, lam @ w
    return _min_linear(lam, c, x0, eps, norm)


def _textbook(layers: Layers, x0, y, eps, norm):
    """(hidden bounds, margin bounds) the slow and plain way."""
    n = len(x0)
    hidden = []
    for k, (w, b) in enumerate(layers[:-1]):
        both = _textbook_backward(layers, hidden, k, torch.cat([w, -w]).expand(n, -1, -1),
                                  torch.cat([b, -b]).expand(n, -1), x0, eps, norm)
        lo, hi = both[:, :len(b)], -both[:, len(b):]
        if k:
            p_lo, p_hi = hidden[-1][0].clamp_min(0), hidden[-1][1].clamp_min(0)
            mid, rad = (p_hi + p_lo) / 2 @ w.T + b, (p_hi - p_lo) / 2 @ w.abs().T
            lo, hi = torch.maximum(lo, mid - rad), torch.minimum(hi, mid + rad)
        hidden.append((lo, hi))
    eye = torch.eye(layers[-1][0].shape[0], dtype=torch.float64)
    spec = eye[y][:, None, :] - eye[others(y, len(eye))]
    w, b = layers[-1]
    crown = _textbook_backward(layers, hidden, len(layers) - 1, spec @ w, spec @ b, x0, eps,
                               norm)
    lo, hi = hidden[-1][0].clamp_min(0), hidden[-1][1].clamp_min(0)
    interval = ((spec @ w) @ ((hi + lo) / 2)[:, :, None]
                - (spec @ w).abs() @ ((hi - lo) / 2)[:, :, None])[..., 0] + spec @ b
    return hidden, torch.maximum(crown, interval)


def _random_net(widths: list[int], seed: int) -> Layers:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(o, i, generator=g, dtype=torch.float64) / i ** 0.5,
             torch.randn(o, generator=g, dtype=torch.float64) * 0.1)
            for i, o in itertools.pairwise(widths)]


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("linf", 0.3), ("l2", 0.5)])
def test_crown_equals_the_textbook_form_on_random_deep_nets(norm, eps):
    layers = _random_net([6, 12, 10, 8, 7, 4], seed=1)
    g = torch.Generator().manual_seed(2)
    x0 = torch.rand(30, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (30,), generator=g)
    hidden = preactivation_bounds(layers, x0, eps, norm)
    margins = margin_bounds(layers, hidden, x0, y, eps, norm)
    ref_hidden, ref_margins = _textbook(layers, x0, y, eps, norm)
    unstable = sum(int(((lo < 0) & (hi > 0)).sum()) for lo, hi in hidden)
    assert unstable > 100  # the sign split is exercised, on many columns
    for (lo, hi), (rlo, rhi) in zip(hidden, ref_hidden):
        torch.testing.assert_close(lo, rlo, rtol=0, atol=1e-9)
        torch.testing.assert_close(hi, rhi, rtol=0, atol=1e-9)
    torch.testing.assert_close(margins, ref_margins, rtol=0, atol=1e-9)


def test_crown_and_ibp_equal_the_textbook_form_on_a_digits_cnn(fitted):
    from _fixtures import digits

    model = fitted("cnn")
    te = digits("test")
    x, y = te.x[:20], te.y[:20]
    layers = network(ops_of(model), tuple(x.shape[1:]))
    x0 = x.double().flatten(1)
    margins = margin_bounds(layers, preactivation_bounds(layers, x0, 0.05, "linf"), x0, y,
                            0.05, "linf")
    torch.testing.assert_close(margins, _textbook(layers, x0, y, 0.05, "linf")[1], rtol=0,
                               atol=1e-9)


def test_ibp_pairs_at_once_equal_rows_per_sample(fitted, monkeypatch):
    from _fixtures import digits

    te = digits("test")
    x, y = te.x[:40].double(), te.y[:40]
    for family in ("mlp", "cnn"):
        ops = ops_of(fitted(family))
        at_once = ibp_margins(ops, x, y, 0.05)
        monkeypatch.setattr(bounds_module, "PAIR_ENTRIES", 0)
        per_sample = ibp_margins(ops, x, y, 0.05)
        monkeypatch.undo()
        assert at_once.shape == (40, 9)
        torch.testing.assert_close(at_once, per_sample, rtol=0, atol=1e-10)
