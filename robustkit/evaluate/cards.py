"""A model card per evaluated model, in RobustBench's field names, beside the per-sample
table: what RobustBench's per-model JSON holds (``clean_acc``, ``autoattack_acc``, ``eps``,
``dataset``, ``architecture``, ``number_forward_passes``...; accuracies as percent strings
with two decimals, as there), plus under ``robustkit`` the run's seeds, versions, the
model's content hash and one entry per eps.
"""
from __future__ import annotations

import json
import math
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from robustkit import __version__
from robustkit.evaluate.shards import model_digest
from robustkit.store import atomic_write

# The fields of RobustBench's model_info/<dataset>/<threat>/<Name>.json, in its order.
ROBUSTBENCH_FIELDS = ("link", "name", "authors", "additional_data", "number_forward_passes",
                      "dataset", "venue", "architecture", "eps", "clean_acc", "reported",
                      "autoattack_acc", "external", "footnote", "unreliable")
AUTOATTACKS = ("autoattack", "autoattack_l2")


def model_card(rows: Sequence[dict[str, Any]], model: torch.nn.Module, *, name: str,
               dataset: str, architecture: str, attack: str, params: dict[str, Any],
               seed: int, norm: str, samples: str | None = None,
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The card of one model from :func:`robustkit.evaluate.evaluate`'s rows.

    The headline (``eps``, ``autoattack_acc``) is the largest eps evaluated; an attack
    other than AutoAttack leaves ``autoattack_acc`` empty (RobustBench's "not evaluated")
    and gives its accuracy as ``robustkit.robust_acc``, never under AutoAttack's name.

    Example:
        >>> import torch
        >>> rows = [{"eps": 0.1, "clean_accuracy": 0.9, "robust_accuracy": 0.5, "n": 10}]
        >>> card = model_card(rows, torch.nn.Linear(2, 2), name="m", dataset="digits",
        ...                   architecture="Linear", attack="autoattack", params={}, seed=0,
        ...                   norm="linf")
        >>> card["clean_acc"], card["autoattack_acc"], card["eps"]
        ('90.00', '50.00', '0.1')
    """
    top = max(rows, key=lambda r: r["eps"])
    robust = _percent(top["robust_accuracy"])
    card: dict[str, Any] = {
        "link": "", "name": name, "authors": "", "additional_data": False,
        "number_forward_passes": 1, "dataset": dataset, "venue": "",
        "architecture": architecture, "eps": f"{top['eps']:g}",
        "clean_acc": _percent(top["clean_accuracy"]), "reported": "",
        "autoattack_acc": robust if attack in AUTOATTACKS else "", "external": "",
        "footnote": "", "unreliable": False}
    card["robustkit"] = {
        "attack": attack, "params": params, "norm": norm, "seed": seed,
        "robust_acc": robust, "n": top["n"], "samples": samples,
        "model_sha256": model_digest(model),
        "versions": _versions(),
        "per_eps": [{k: r.get(k) for k in ("eps", "n", "clean_accuracy", "robust_accuracy",
                                            "success_rate", "l2_median", "linf_median",
                                            "seconds")} for r in rows],
        **(extra or {})}
    return card


def write_card(path: str | Path, card: dict[str, Any]) -> Path:
    """Write a card as JSON, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(card, indent=2, default=str).encode())
    return path


def _percent(v: Any) -> str:
    return "" if v is None or math.isnan(float(v)) else f"{100 * float(v):.2f}"


def _versions() -> dict[str, str]:
    return {"robustkit": __version__, "torch": torch.__version__,
            "python": platform.python_version()}
