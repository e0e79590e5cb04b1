"""The layer chain the certificates read reproduces each model's margins."""
from __future__ import annotations

import io
import warnings

import pytest
import torch
from _fixtures import digits, fitted_model
from torch import nn

from robustkit.certify.dense import network
from robustkit.certify.layers import Unsupported, ops_of, run
from robustkit.models import Normalized
from robustkit.models.torch_model import TorchModel


def _margins(logits: torch.Tensor) -> torch.Tensor:
    return logits - logits[:, :1]


def _dense(layers, x: torch.Tensor) -> torch.Tensor:
    h = x.flatten(1).double()
    for i, (w, b) in enumerate(layers):
        h = h @ w.T + b
        if i < len(layers) - 1:
            h = torch.relu(h)
    return h


def _check(model: nn.Module, x: torch.Tensor, tol: float = 1e-4) -> None:
    with torch.no_grad():
        want = _margins(model(x).double())
        got = _margins(run(ops_of(model), x.double()))
        dense = _margins(_dense(network(ops_of(model), tuple(x.shape[1:])), x))
    assert torch.allclose(got, want, atol=tol), (got - want).abs().max()
    assert torch.allclose(dense, want, atol=tol), (dense - want).abs().max()


@pytest.mark.parametrize("family", ["linear", "mlp", "cnn"])
def test_robustkit_families(family):
    _check(fitted_model(family), digits("test").x[:20])


def test_layers_behind_normalized_and_torch_model():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3)
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), bn, nn.ReLU(), nn.AvgPool2d(2),
                        nn.Flatten(), nn.Dropout(0.5), nn.Linear(3 * 4 * 4, 5)).eval()
    x = torch.rand(6, 2, 8, 8)
    _check(Normalized(net, [0.4, 0.6], [0.2, 0.3]), x, tol=1e-5)
    net.train()
    with pytest.raises(Unsupported, match="training mode"):
        ops_of(net)
    identity = TorchModel("torch.nn:Identity", [4], 4)
    _check(identity, torch.rand(3, 4), tol=1e-6)


def test_sklearn_relu_mlp_and_onnx_chain():
    from sklearn.neural_network import MLPClassifier

    from robustkit.models import from_sklearn
    from robustkit.models.onnx_model import from_onnx

    te = digits("test")
    x, y = te.x[:200].flatten(1), te.y[:200]
    for labels in (y, (y > 4).long()):  # multiclass (softmax) and binary (logistic) heads
        est = MLPClassifier((12,), max_iter=50, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence
            est.fit(x.numpy(), labels.numpy())
        _check(from_sklearn(est), x[:20].double(), tol=1e-9)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.rand(2, 1, 8, 8),), buf, input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "n"}}, dynamo=False)
    _check(from_onnx(buf.getvalue(), [1, 8, 8]), te.x[:20], tol=1e-5)


def test_convolutions_too_large_for_dense_bounds_are_unknown_not_a_crash():
    from robustkit.certify import certify

    net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(32 * 48 * 48, 2)).eval()
    x, y = torch.rand(2, 3, 48, 48), torch.tensor([0, 1])
    for method in ("crown", "milp"):
        r = certify(net, x, y, eps=0.01, method=method)
        assert r.decided_share == 0 or r.broken.all()
        assert all("too large for dense bounds" in why for why in r.reasons if why)
    assert certify(net, x, y, eps=0.0, method="ibp").decided_share == 1.0
