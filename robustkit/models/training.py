"""One seeded mini-batch training loop for every gradient-trained family.

Adversarial training (``robustkit.defenses``) reuses it through two hooks: ``perturb``
replaces each batch's inputs before the step, ``on_epoch`` sees every finished epoch.
"""
from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustkit.progress import bar as progress_bar
from robustkit.progress import iterate

LOSSES = ("ce", "hinge", "perceptron")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cyclic", "cosine")

Perturb = Callable[[nn.Module, torch.Tensor, torch.Tensor, int], torch.Tensor]
# penalty(module, clean xb, yb, step) -> a scalar added to the batch's training loss
Penalty = Callable[[nn.Module, torch.Tensor, torch.Tensor, int], torch.Tensor]
OnEpoch = Callable[[int, nn.Module, dict], "bool | None"]


GLOBAL_RNG_LOCK = threading.RLock()
"""Held by every block that seeds torch's process-wide RNG: tasks running in threads of one
process (a Dask worker with several threads) would otherwise interleave their draws and
build different initial weights from the same seed."""


@contextmanager
def seeded(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run a block with torch's global RNG seeded (the CPU generator, and ``device``'s when
    it is a GPU), restoring the caller's RNG states after; other GPUs are not touched.
    Thread-safe: one seeded block at a time per process (keep the blocks short)."""
    device = torch.device(device)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()
            ] if device.type == "cuda" else []
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


def loss_fn(name: str, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean loss of ``logits`` (N, K) against ``y``: cross-entropy, multi-class hinge
    (Crammer-Singer) or the perceptron criterion (hinge without margin)."""
    if name == "ce":
        return F.cross_entropy(logits, y)
    true = logits.gather(1, y[:, None])
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1, keepdim=True)
    margin = 1.0 if name == "hinge" else 0.0
    return F.relu(margin + other - true).mean()


@dataclass(frozen=True)
class FitConfig:
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    optimizer: str = "adam"
    schedule: str = "constant"
    loss: str = "ce"


def lr_at(cfg: FitConfig, step: int, total: int) -> float:
    """Learning rate at ``step`` of ``total``: constant, cyclic (triangle peaking at 2/5,
    as in Wong et al. 2020) or cosine."""
    t = step / max(total, 1)
    if cfg.schedule == "cyclic":
        return cfg.lr * (t / 0.4 if t < 0.4 else max(0.0, (1 - t) / 0.6))
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * t))
    return cfg.lr


def make_optimizer(module: nn.Module, cfg: FitConfig) -> torch.optim.Optimizer:
    """The optimizer ``fit_torch`` uses for ``cfg``: Adam, or SGD with momentum 0.9."""
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {cfg.optimizer!r}")
    params = [p for p in module.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)


def fit_torch(
    module: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: FitConfig,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
    perturb: Perturb | None = None,
    penalty: Penalty | None = None,
    on_epoch: OnEpoch | None = None,
    start_epoch: int = 0,
    desc: str = "train",
    optimizer: torch.optim.Optimizer | None = None,
) -> nn.Module:
    """Train ``module`` in place with mini-batch gradient descent and return it.

    Args:
        x: (N, ...) float in [0, 1]; y: (N,) int64.
        cfg: epochs, learning rate, batch size, optimizer, schedule and loss.
        perturb: optional ``perturb(module, xb, yb, step) -> xb_adv`` applied to every batch.
        penalty: optional ``penalty(module, xb, yb, step) -> scalar`` (xb the clean batch)
            added to the loss that is minimized; the reported ``loss`` leaves it out.
        on_epoch: optional ``on_epoch(epoch, module, stats)``; returning True stops training.
        start_epoch: resume point (epochs before it are skipped, the RNG stream is the same).
        optimizer: an optimizer over ``module``'s parameters to use instead of a fresh
            ``make_optimizer(module, cfg)`` (resuming passes one with its state restored).
    """
    if cfg.loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {cfg.loss!r}")
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {cfg.optimizer!r}")
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {cfg.schedule!r}")
    dev = torch.device(device)
    module.to(dev).train()
    opt = optimizer if optimizer is not None else make_optimizer(module, cfg)
    gen = torch.Generator().manual_seed(seed)
    n = len(x)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    bar = _bar(cfg.epochs, progress, desc)
    try:
        step = 0
        for epoch in range(cfg.epochs):
            order = torch.randperm(n, generator=gen)
            if epoch < start_epoch:
                step += steps_per_epoch
                continue
            loss_sum, correct = 0.0, 0
            for i in range(0, n, cfg.batch_size):
                idx = order[i:i + cfg.batch_size]
                xb, yb = x[idx].to(dev), y[idx].to(dev)
                clean = xb
                if perturb is not None:
                    xb = perturb(module, xb, yb, step)
                    module.train()
                for g in opt.param_groups:
                    g["lr"] = lr_at(cfg, step, total)
                logits = module(xb)
                loss = loss_fn(cfg.loss, logits, yb)
                opt.zero_grad(set_to_none=True)
                (loss if penalty is None else loss + penalty(module, clean, yb, step)).backward()
                opt.step()
                step += 1
                loss_sum += float(loss.detach()) * len(idx)
                correct += int((logits.detach().argmax(1) == yb).sum())
            stats = {"loss": loss_sum / n, "train_accuracy": correct / n}
            if bar is not None:
                bar.set_postfix(loss=f"{stats['loss']:.4f}", acc=f"{stats['train_accuracy']:.3f}")
                bar.update(1)
            if on_epoch is not None and on_epoch(epoch, module, stats):
                break
    finally:  # a Ticker's thread must stop also when training fails
        if bar is not None:
            bar.close()
    return module.eval()


def _bar(total: int, progress: bool, desc: str) -> Any:
    if not progress:
        return None
    # A bar on a terminal; elsewhere a status line every few seconds.
    return progress_bar(total, desc, "epoch", leave=False)


def per_class(classes: list[int], progress: bool, desc: str) -> Iterable[int]:
    """Iterate over ``classes``, with a progress bar when ``progress`` (status lines when
    stderr is not a terminal): the one-model-per-class fits of svm and gmm."""
    if not progress:
        return classes
    return iterate(classes, desc, "class")
