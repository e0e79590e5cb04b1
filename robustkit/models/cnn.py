"""Convolutional networks: a small LeNet-style CNN and torchvision's ResNet-18."""
from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from robustkit.models._torchfit import TRAIN_CHOICES, TRAIN_DEFAULTS, TRAIN_RULES, make_fit
from robustkit.models.inputs import SHAPE_RULES, check_arch, check_input
from robustkit.models.registry import Family, register
from robustkit.params import integer, integers


class CNN(nn.Module):
    """Two stride-2 convolutions and two fully connected layers.

    With the defaults this is the MNIST network of Wong et al. 2020 ("Fast is better than
    free"): Conv(16, 4x4, s2) - ReLU - Conv(32, 4x4, s2) - ReLU - FC(100) - ReLU - FC(K).
    It accepts any input whose height and width are multiples of 4 (8x8 digits, 28x28 MNIST).
    """

    def __init__(self, input_shape: list[int], n_classes: int,
                 channels: list[int] = (16, 32), hidden: int = 100) -> None:  # type: ignore[assignment]
        super().__init__()
        check_arch("cnn", {"input_shape": input_shape, "n_classes": n_classes,
                           "channels": channels, "hidden": hidden},
                   {**SHAPE_RULES, "input_shape": integers(1, length=3),
                    "channels": integers(1, length=2), "hidden": integer(1)})
        c, h, w = input_shape
        c1, c2 = (int(v) for v in channels)
        self.arch: dict[str, Any] = {"input_shape": list(input_shape),
                                     "n_classes": int(n_classes), "channels": [c1, c2],
                                     "hidden": int(hidden)}
        self.features = nn.Sequential(
            nn.Conv2d(c, c1, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
        )
        flat = c2 * (h // 4) * (w // 4)
        self.head = nn.Sequential(nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))

    @property
    def _dtype(self) -> torch.dtype:
        """The parameters' dtype, which inputs are cast to."""
        return cast(nn.Linear, self.head[0]).weight.dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.arch["input_shape"], "cnn", flat_ok=False)
        # dtype: the input is cast to the parameters' (float32), gradients flow back in x's
        return self.head(self.features(x.to(self._dtype)))


def _check_image(x: torch.Tensor, family: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"model {family!r} needs image inputs (N, C, H, W), got shape "
                         f"{tuple(x.shape)}")


def _build_cnn(x: torch.Tensor, n_classes: int, params: dict) -> CNN:
    _check_image(x, "cnn")
    if x.shape[2] % 4 or x.shape[3] % 4:
        raise ValueError(f"model 'cnn' needs height and width divisible by 4, got "
                         f"{tuple(x.shape[2:])}")
    return CNN(list(x.shape[1:]), n_classes, list(params["channels"]), int(params["hidden"]))


register(Family(
    name="cnn",
    # Cyclic LR peaking at 1e-2 (Adam): 0.98 test accuracy on digits for seeds 0-2.
    defaults={"channels": (16, 32), "hidden": 100, **TRAIN_DEFAULTS, "epochs": 30, "lr": 1e-2,
              "schedule": "cyclic", "weight_decay": 1e-4},
    choices=TRAIN_CHOICES,
    rules={**TRAIN_RULES, "channels": integers(1, length=2), "hidden": integer(1)},
    fit=make_fit(_build_cnn),
    module=CNN,
    doc="small LeNet-style CNN (2 conv + 2 fc, the MNIST net of Wong et al. 2020)",
))


class ResNet18(nn.Module):
    """torchvision's ResNet-18 with a CIFAR stem (3x3 conv, stride 1, no max-pool) and the
    per-channel normalization inside, for 32x32 inputs."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, input_shape: list[int], n_classes: int) -> None:
        super().__init__()
        from torchvision.models import resnet18

        check_arch("resnet18", {"input_shape": input_shape, "n_classes": n_classes},
                   {**SHAPE_RULES, "input_shape": integers(1, length=3)})
        c = int(input_shape[0])
        self.arch: dict[str, Any] = {"input_shape": list(input_shape),
                                     "n_classes": int(n_classes)}
        self.register_buffer("mean", torch.zeros(c, 1, 1))
        self.register_buffer("std", torch.ones(c, 1, 1))
        net = resnet18(weights=None, num_classes=n_classes)
        net.conv1 = nn.Conv2d(c, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()  # type: ignore[assignment]
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.arch["input_shape"], "resnet18", flat_ok=False)
        x = x.to(self.mean.dtype)
        return self.net((x - self.mean) / self.std)


def _build_resnet(x: torch.Tensor, n_classes: int, params: dict) -> ResNet18:
    _check_image(x, "resnet18")
    m = ResNet18(list(x.shape[1:]), n_classes)
    with torch.no_grad():
        m.mean.copy_(x.mean((0, 2, 3))[:, None, None])
        m.std.copy_(x.std((0, 2, 3)).clamp_min(1e-3)[:, None, None])
    return m


register(Family(
    name="resnet18",
    defaults={**TRAIN_DEFAULTS, "epochs": 15, "lr": 0.1, "optimizer": "sgd",
              "schedule": "cosine", "weight_decay": 5e-4, "batch_size": 128},
    choices=TRAIN_CHOICES,
    rules=TRAIN_RULES,
    fit=make_fit(_build_resnet),
    module=ResNet18,
    doc="torchvision ResNet-18 (CIFAR stem) for 3-channel 32x32 inputs",
))
