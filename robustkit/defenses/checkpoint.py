"""Per-epoch checkpoints of a training run, one safetensors file per checkpoint.

A checkpoint folder holds ``checkpoint.safetensors``: model weights ``model.*``, optimizer
state ``optim.*`` and defense state ``state.*`` as tensors, and in the file's metadata
header one JSON document (epoch, history, the run's fingerprint, optimizer
hyperparameters, a SHA-256 of the tensors). Tensors and JSON are one file written through
a temp file and ``os.replace``, so a kill at any moment leaves the previous checkpoint or
the new one, never a mismatched pair. Nothing is ever unpickled.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from robustkit.defenses.base import DefenseContext
from robustkit.models.training import (
    FitConfig,
    Penalty,
    Perturb,
    fit_torch,
    make_optimizer,
)

# watch(epoch, module, state) -> (stop, record): an epoch-end check (e.g. catastrophic
# overfitting); ``state`` is the defense's tensor state, saved with every checkpoint.
Watch = Callable[[int, nn.Module, dict], "tuple[bool, dict[str, Any]]"]

TENSORS = "checkpoint.safetensors"
LEGACY_META = "checkpoint.json"  # robustkit-checkpoint-1 kept the JSON in a second file
FORMAT = "robustkit-checkpoint-2"


class CheckpointError(ValueError):
    """A checkpoint is corrupt, foreign, or belongs to a different run."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: the last finished epoch, the history so far, the defense state
    tensors and whether training had already finished (stopped early or last epoch)."""

    epoch: int
    history: list[dict[str, Any]]
    state: dict[str, torch.Tensor]
    finished: bool


def save_checkpoint(folder: Path, *, fingerprint: Mapping[str, Any], module: nn.Module,
                    optimizer: torch.optim.Optimizer, epoch: int,
                    history: list[dict[str, Any]], state: Mapping[str, torch.Tensor],
                    finished: bool = False) -> None:
    """Write the checkpoint of ``epoch`` atomically: one file, replaced in one step."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v for k, v in module.state_dict().items()}
    opt_tensors, opt_meta = _optimizer_parts(optimizer)
    tensors.update(opt_tensors)
    tensors.update({f"state.{k}": v for k, v in state.items()})
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    meta = {"format": FORMAT, "fingerprint": dict(fingerprint), "epoch": int(epoch),
            "finished": bool(finished), "history": history, "optimizer": opt_meta,
            "sha256": _digest(tensors)}
    text = json.dumps(meta, default=float)
    tmp = _tmp_path(folder, TENSORS)
    try:
        save_file(tensors, str(tmp), metadata={"robustkit": text})
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, folder / TENSORS)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    (folder / LEGACY_META).unlink(missing_ok=True)
    for stale in folder.glob(f".{TENSORS}.*.tmp"):  # left by a process killed mid-write
        stale.unlink(missing_ok=True)


def read_checkpoint_meta(folder: Path) -> dict[str, Any] | None:
    """The JSON document of the checkpoint in ``folder`` (None when there is none).

    Raises:
        CheckpointError: the file is truncated, foreign or written by an older robustkit.
    """
    from safetensors import SafetensorError, safe_open

    path = folder / TENSORS
    if (folder / LEGACY_META).exists():
        raise CheckpointError(f"{folder} holds a checkpoint of an older robustkit that "
                              "cannot be resumed; delete the folder to start over")
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            text = (fh.metadata() or {}).get("robustkit")
        meta = json.loads(text) if text is not None else None
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"unreadable checkpoint {path} ({exc}); delete {folder} to "
                              "start over") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a robustkit checkpoint of this version; delete "
                              f"{folder} to start over")
    return meta


def load_checkpoint(folder: Path, *, fingerprint: Mapping[str, Any], module: nn.Module,
                    optimizer: torch.optim.Optimizer) -> Checkpoint | None:
    """Restore ``module`` and ``optimizer`` from ``folder``; None when it holds no checkpoint.

    Raises:
        CheckpointError: the file is corrupt or foreign, or the checkpoint belongs to a
            run with different settings (``fingerprint`` differs).
    """
    meta = read_checkpoint_meta(folder)
    if meta is None:
        return None
    if meta.get("fingerprint") != json.loads(json.dumps(dict(fingerprint))):
        raise CheckpointError(
            f"checkpoint in {folder} belongs to a different run (settings differ); "
            "delete the folder or choose another one")
    tensors = load_file(str(folder / TENSORS))
    if _digest(tensors) != meta.get("sha256"):
        raise CheckpointError(f"{folder / TENSORS} is corrupt: its tensors' SHA-256 does not "
                              f"match the one recorded in it; delete {folder} to start over")
    dev = next((p.device for p in module.parameters()), torch.device("cpu"))
    model_sd = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    module.load_state_dict(model_sd, strict=True)
    _load_optimizer(optimizer, tensors, meta["optimizer"], dev)
    state = {k[6:]: v.to(dev) for k, v in tensors.items() if k.startswith("state.")}
    return Checkpoint(int(meta["epoch"]), list(meta["history"]), state, bool(meta["finished"]))


def fit_resumable(ctx: DefenseContext, x: torch.Tensor, y: torch.Tensor, *,
                  fingerprint: Mapping[str, Any], perturb: Perturb | None = None,
                  penalty: Penalty | None = None, watch: Watch | None = None,
                  state: dict[str, torch.Tensor] | None = None,
                  desc: str = "train") -> tuple[nn.Module, list[dict[str, Any]], dict]:
    """Train a model of ``ctx.spec`` with ``fit_torch``'s hooks, checkpointing every epoch.

    The module is initialized exactly as plain training does (same seed, same
    preprocessing fit), so without ``perturb`` this is plain training. With
    ``ctx.checkpoint`` set, each finished epoch writes a checkpoint and a later call with
    the same ``fingerprint`` resumes after the last one, giving the same final weights as
    an uninterrupted run (batch order and every perturbation are functions of the seed
    and the step number, not of the RNG's history).

    Returns:
        ``(module, history, state)``: the module on the CPU in eval mode, one record per
        epoch (``epoch``, ``loss``, ``train_accuracy``, ``seconds``, the watch's fields)
        and the defense state as restored/updated.
    """
    from robustkit.models import get as get_family

    params = dict(ctx.spec.params)
    cfg = _fit_config(ctx.spec.family, params)
    module = get_family(ctx.spec.family).fit(
        x, y, n_classes=ctx.n_classes, params={**params, "epochs": 0}, seed=ctx.seed,
        device=ctx.device, progress=False).to(ctx.device)
    opt = make_optimizer(module, cfg)
    state = state if state is not None else {}
    history: list[dict[str, Any]] = []
    start = 0
    if ctx.checkpoint is not None:
        ck = load_checkpoint(ctx.checkpoint, fingerprint=fingerprint, module=module,
                             optimizer=opt)
        if ck is not None:
            history, start = ck.history, ck.epoch + 1
            state.update(ck.state)
            if ck.finished:
                return module.cpu().eval(), history, state
    clock = [time.perf_counter()]

    def on_epoch(epoch: int, m: nn.Module, stats: dict) -> bool:
        rec: dict[str, Any] = {"epoch": epoch, **stats}
        stop = False
        if watch is not None:
            stop, extra = watch(epoch, m, state)
            rec.update(extra)
            if extra.get("reset_optimizer"):  # the watch restored other weights
                opt.state.clear()
        rec["seconds"] = time.perf_counter() - clock[0]
        history.append(rec)
        if ctx.checkpoint is not None:
            save_checkpoint(ctx.checkpoint, fingerprint=fingerprint, module=m, optimizer=opt,
                            epoch=epoch, history=history, state=state,
                            finished=stop or epoch == cfg.epochs - 1)
        user_stop = ctx.on_epoch(epoch, m, rec) if ctx.on_epoch is not None else False
        clock[0] = time.perf_counter()
        return stop or bool(user_stop)

    fit_torch(module, x, y, cfg, seed=ctx.seed, device=ctx.device, progress=ctx.progress,
              perturb=perturb, penalty=penalty, on_epoch=on_epoch, start_epoch=start,
              desc=desc, optimizer=opt)
    return module.cpu().eval(), history, state


def _fit_config(family: str, params: dict[str, Any]) -> FitConfig:
    from robustkit.models._torchfit import fit_config
    from robustkit.models.linear import LOSS_OF

    return fit_config(params, LOSS_OF[params["loss"]] if family == "linear" else "ce")


def _optimizer_parts(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, st in sd["state"].items():
        for key, value in st.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    groups = json.loads(json.dumps(sd["param_groups"], default=list))
    return tensors, {"param_groups": groups, "scalars": scalars}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor],
                    meta: Mapping[str, Any], dev: torch.device) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else dict(g)
              for g in meta["param_groups"]]
    opt.load_state_dict({"state": state, "param_groups": groups})
    for st in opt.state.values():
        for key, value in st.items():
            # Adam keeps its step count on the CPU; the moments follow the parameters.
            if torch.is_tensor(value) and key != "step":
                st[key] = value.to(dev)


def _tmp_path(folder: Path, name: str) -> Path:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def _digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``tensors`` (CPU, contiguous)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def fingerprint(ctx: DefenseContext, defense: str, x: torch.Tensor, y: torch.Tensor,
                params: Mapping[str, Any]) -> dict[str, Any]:
    """What identifies a training run for resuming: defense, hyperparameters, model, seed
    and a cheap checksum of the data."""
    return json.loads(json.dumps({
        "defense": defense, "params": dict(params), "model": ctx.spec.family,
        "model_params": dict(ctx.spec.params), "seed": ctx.seed, "n_classes": ctx.n_classes,
        "n": len(x), "x_sum": round(float(x.double().sum()), 6), "y_sum": int(y.sum()),
    }, default=str))
