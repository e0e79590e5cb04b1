"""A layer chain folded into dense float64 matrices: what CROWN, the MILP and the linear
certificate compute with.

Each run of affine ops between two ReLUs becomes one matrix, read off by evaluating the
run on the identity basis (so a convolution becomes its Toeplitz matrix): the network is
``[(W_1, b_1), ..., (W_L, b_L)]`` with ``logits = W_L relu(... relu(W_1 x + b_1) ...) + b_L``
up to the per-sample shift of :mod:`robustkit.certify.layers`.
"""
from __future__ import annotations

import torch

from robustkit.certify.layers import Affine, Op, Unsupported

Tensor = torch.Tensor
MAX_ENTRIES = 50_000_000  # 400 MB of float64 per dense layer


@torch.no_grad()
def network(ops: list[Op], shape: tuple[int, ...] | torch.Size,
            dtype: torch.dtype = torch.float64,
            max_entries: int = MAX_ENTRIES) -> list[tuple[Tensor, Tensor]]:
    """Fold the chain into dense layers ``[(W_1, b_1), ..., (W_L, b_L)]`` (W_k of shape
    (out, in), float64 by default) for inputs of ``shape`` (one sample, flattened in
    order): ``logits = W_L relu(... relu(W_1 x + b_1) ...) + b_L``.

    Raises:
        Unsupported: a layer whose dense matrix would exceed ``max_entries`` numbers (a
            convolution over a large image: IBP, which keeps convolutions, still applies).
    """
    groups: list[list[Affine]] = [[]]
    for op in ops:
        if op == "relu":
            if groups[-1]:  # relu(relu(z)) = relu(z); a leading relu acts on x >= 0
                groups.append([])
        else:
            groups[-1].append(op)  # type: ignore[arg-type]
    if len(groups) > 1 and not groups[-1]:
        raise Unsupported("a chain that ends in a ReLU (logits must come from an affine layer)")
    layers = []
    for group in groups:
        dim = 1
        for s in shape:
            dim *= int(s)
        probe = torch.zeros(1, *shape, dtype=dtype)
        for op in group:
            probe = op.fn(probe)
            if probe.numel() * (dim + 1) > max_entries:
                raise Unsupported(f"a layer too large for dense bounds ({dim} inputs x "
                                  f"{probe.numel()} outputs > {max_entries:,} numbers)")
        basis = torch.cat([torch.zeros(1, dim, dtype=dtype), torch.eye(dim, dtype=dtype)])
        out = basis.reshape(dim + 1, *shape)
        for op in group:
            out = op.fn(out)
        shape = tuple(out.shape[1:])
        out = out.flatten(1)
        layers.append(((out[1:] - out[:1]).T.contiguous(), out[0].clone()))
    return layers
