"""Rows of benchmarks/results/defenses.csv: how a rerun's rows replace the old ones, and
the defense settings that tell PLAN entries apart."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

# The defense settings that tell PLAN entries apart (and the README table shows) ...
SETTING_KEYS = ("alpha", "steps", "step_size", "step", "clip", "mix", "rounds", "eps_warmup",
                "noise", "project", "recover", "recover_factor")
# ... and the defaults of those added later, for the rows written before them
SETTING_DEFAULTS = {"noise": 1.0, "project": True, "recover": 0, "recover_factor": 0.8,
                    "eps_warmup": 0.0}


def merge(new: list[dict[str, Any]], path: Path, *, by_entry: bool = False,
          attacks: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Existing rows of other (piece, dataset, quick) runs plus the new rows; with
    ``by_entry`` only the rows of the same PLAN entries (model and defense params) go, and
    with ``attacks`` (a rescore) only the rows of the same entries, variants, attacks and
    number of test images (a rescore on fewer images is a row of its own)."""
    cols = ("piece", "dataset", "quick") + (("model_params", "train_eps", "seed")
                                             if by_entry or attacks else ())
    if attacks:
        cols += ("variant", "attack", "n")

    def key(r: dict[str, Any]) -> tuple[str, ...]:
        return tuple(str(r[c]) for c in cols) + ((_entry_key(r),) if len(cols) > 3 else ())

    done = {key(r) for r in new}
    old = []
    if path.is_file():
        with open(path, newline="") as fh:
            old = [r for r in csv.DictReader(fh) if key(r) not in done]
    return old + new


def _entry_key(row: dict[str, Any]) -> str:
    """The defense parameters a PLAN entry sets (alpha, steps, clip, eps_warmup, ...)."""
    d = json.loads(row["defense_params"]) if isinstance(row["defense_params"], str) \
        else row["defense_params"]
    return json.dumps({k: d.get(k, SETTING_DEFAULTS.get(k)) for k in SETTING_KEYS},
                      sort_keys=True)
