"""The library path for models from elsewhere: any nn.Module (optionally Normalized) and
converted scikit-learn estimators go straight into evaluate and the attacks."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from robustkit import attacks, load_dataset
from robustkit.evaluate import evaluate
from robustkit.models import Normalized, from_sklearn


def test_normalized_applies_per_channel_mean_and_std():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Flatten(), nn.Linear(2 * 4 * 4, 5))
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    x = torch.rand(6, 3, 4, 4)
    manual = net((x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None])
    torch.testing.assert_close(Normalized(net, mean, std)(x), manual)
    flat = nn.Linear(3, 2)
    z = torch.rand(4, 3)
    torch.testing.assert_close(Normalized(flat, mean, std)(z),
                               flat((z - torch.tensor(mean)) / torch.tensor(std)))


@pytest.mark.parametrize("bad", [([0.5, 0.5], [0.2]), ([0.5], [0.0])])
def test_normalized_rejects_bad_std(bad):
    with pytest.raises(ValueError, match="std"):
        Normalized(nn.Identity(), *bad)


@pytest.mark.parametrize("attack", ["fgsm", "pgd", "deepfool"])
def test_plain_module_and_converted_svc_go_through_evaluate(attack):
    from sklearn.svm import SVC

    te = load_dataset("digits", "test", seed=0, limit=40)
    tr = load_dataset("digits", "train", seed=0, limit=300)
    torch.manual_seed(0)
    net = Normalized(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), [0.3], [0.4])
    svc = from_sklearn(SVC().fit(tr.x.reshape(300, -1).double().numpy(), tr.y.numpy()),
                       input_shape=(1, 8, 8))
    eps = 2.0 if attack == "deepfool" else 0.2  # deepfool: an L2 budget
    for model in (net, svc):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        rows = evaluate(model, attacks.get(attack), te.x, te.y, eps=[0.0, eps], device="cpu")
        assert rows[0]["robust_accuracy"] == rows[0]["clean_accuracy"]
        assert rows[1]["robust_accuracy"] <= rows[0]["clean_accuracy"]
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    # The converted SVC really is attacked: high clean accuracy, lowered by the attack.
    assert rows[0]["clean_accuracy"] > 0.9 and rows[1]["robust_accuracy"] < 0.9
