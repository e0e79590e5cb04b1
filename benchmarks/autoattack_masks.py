"""Per-sample robust masks of the AutoAttack benchmark's methods, kept between runs
(runs/aa-masks/<dataset>-<model>-<eps>-n<n>/, git-ignored): the reference seeds and
robustkit's chains may then run in separate processes and still be compared sample by
sample (``missed_vs_reference``)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from common import RESULTS
from safetensors import safe_open
from safetensors.torch import load_file, save_file

MASKS = RESULTS.parents[1] / "runs" / "aa-masks"


def save_mask(folder: Path, method: str, robust: torch.Tensor) -> None:
    """Keep ``robust`` (bool (n,)) of ``method`` in ``folder`` (atomic write)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    os.close(fd)
    save_file({"robust": robust.detach().cpu().to(torch.uint8).contiguous()}, tmp,
              metadata={"method": json.dumps(method)})
    os.replace(tmp, folder / f"{method.replace(' ', '_').replace('/', '_')}.safetensors")


def load_masks(folder: Path) -> dict[str, torch.Tensor]:
    """Every mask kept in ``folder``: method name -> bool (n,)."""
    out: dict[str, torch.Tensor] = {}
    for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        with safe_open(str(path), "pt") as fh:
            method = json.loads((fh.metadata() or {})["method"])
        out[method] = load_file(str(path))["robust"].bool()
    return out
