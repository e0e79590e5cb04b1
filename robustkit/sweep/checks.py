"""Gradient-masking flags on results rows: the sanity checks of ``robustkit.defenses.score``.

For each model (key), PGD's robust accuracy is compared with FGSM's and with random
noise's at the same eps, and PGD at eps >= 1 must reach ~0 accuracy (Carlini et al.
2019; Athalye et al. 2018). The flags go into the ``masking_flags`` column of the PGD
rows. To make that deterministic whatever the executor, the runner evaluates PGD cells
after every other cell (:func:`is_checked`), so their partners' rows are known by then.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from robustkit.sweep.cells import Cell, is_wrapper

PARTNERS = ("fgsm", "noise")
LARGE_EPS = 1.0


def is_checked(cell: Cell) -> bool:
    """Whether a cell's rows get masking flags (plain PGD on a model without a detector)."""
    return (cell.attack.attack == "pgd" and not cell.attack.adaptive
            and not is_wrapper(cell.job.defense))


class Evidence:
    """Robust accuracies of FGSM and noise rows, per model key and eps."""

    def __init__(self, rows: Iterable[Mapping[str, Any]] = ()) -> None:
        self._acc: dict[str, dict[tuple[str, float], float]] = defaultdict(dict)
        for r in rows:
            self.add(r)

    def add(self, row: Mapping[str, Any]) -> None:
        """Remember a row if it is an ok, non-adaptive FGSM or noise row."""
        if (row.get("attack_method") in PARTNERS and row.get("status") == "ok"
                and str(row.get("adaptive")).lower() not in ("true", "1")
                and row.get("robust_accuracy") not in (None, "")):
            key = (str(row["attack_method"]), float(row["eps"]))
            self._acc[str(row["model_key"])][key] = float(row["robust_accuracy"])

    def flag(self, cell: Cell, rows: list[dict[str, Any]], *,
             tolerance: float = 0.02) -> list[dict[str, Any]]:
        """``rows`` of a PGD cell with ``masking_flags`` set from the failed checks."""
        from robustkit.defenses.score import sanity_checks

        ok = [r for r in rows if r.get("status", "ok") == "ok"
              and r.get("robust_accuracy") is not None]
        known: list[dict[str, Any]] = [{"attack": a, "eps": e, "robust_accuracy": acc}
                 for (a, e), acc in self._acc[cell.job.key].items()]
        mine: list[dict[str, Any]] = [{"attack": "pgd", "eps": float(r["eps"]),
                 "robust_accuracy": float(r["robust_accuracy"])} for r in ok]
        large = [m for m in mine if m["eps"] >= LARGE_EPS]
        found = sanity_checks(known + [m for m in mine if m["eps"] < LARGE_EPS],
                              tolerance=tolerance, large_eps_row=large[-1] if large else None)
        failed: dict[float, list[str]] = defaultdict(list)
        for c in found:
            if not c.passed:
                failed[float(c.eps)].append(f"{c.check}: {c.detail}")
        return [{**r, "masking_flags": "; ".join(failed.get(float(r["eps"]), []))}
                for r in rows]
