"""``MLPClassifier``: its dense layers, logits ``predict_log_proba``.

Hidden activations are ``relu``, ``tanh``, ``logistic`` or ``identity``; the output is a
softmax (K > 2 classes) or one logistic unit (two classes). The logits are the log of
``predict_proba``, computed stably (log-softmax; ``[logsigmoid(-z), logsigmoid(z)]``).
"""
from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
from torch import nn

ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "logistic": torch.sigmoid,
               "identity": lambda t: t}


class MLPHead(nn.Module):
    """Dense layers ``h = act(h @ W_l + b_l)`` and a softmax or logistic output.

    Args:
        sizes: layer widths [D, h_1, ..., h_L, n_out] (n_out = 1 for two classes).
        activation: hidden activation, one of ``ACTIVATIONS``.
    """

    def __init__(self, sizes: list[int], activation: str = "relu") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, "
                             f"got {activation!r}")
        self.spec: dict[str, Any] = {"kind": "mlp", "sizes": [int(s) for s in sizes],
                                     "activation": activation}
        for layer, (a, b) in enumerate(itertools.pairwise(sizes)):
            self.register_buffer(f"w{layer}", torch.zeros(a, b, dtype=torch.float64))
            self.register_buffer(f"b{layer}", torch.zeros(b, dtype=torch.float64))

    @classmethod
    @torch.no_grad()
    def from_estimator(cls, est: Any) -> MLPHead:
        sizes = [est.coefs_[0].shape[0]] + [w.shape[1] for w in est.coefs_]
        head = cls(sizes, est.activation)
        for layer, (w, b) in enumerate(zip(est.coefs_, est.intercepts_)):
            getattr(head, f"w{layer}").copy_(torch.tensor(np.asarray(w, np.float64)))
            getattr(head, f"b{layer}").copy_(torch.tensor(np.asarray(b, np.float64)))
        return head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = ACTIVATIONS[self.spec["activation"]]
        n_layers = len(self.spec["sizes"]) - 1
        h = x
        for layer in range(n_layers):
            h = h @ getattr(self, f"w{layer}") + getattr(self, f"b{layer}")
            if layer < n_layers - 1:
                h = act(h)
        if h.shape[1] == 1:
            return torch.cat([nn.functional.logsigmoid(-h), nn.functional.logsigmoid(h)], 1)
        return torch.log_softmax(h, dim=1)


def mlp_types() -> set[type]:
    from sklearn.neural_network import MLPClassifier

    return {MLPClassifier}
