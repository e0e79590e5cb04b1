"""Gradient-masking and weak-attack flags on results rows: the sanity checks of
``robustkit.defenses.score``, on every model the sweep attacked with PGD.

For each model (key), PGD's accuracy is compared with FGSM's, random noise's and
AutoAttack's at the same eps, and PGD at eps >= 1 must reach ~0 accuracy (Carlini et al.
2019; Athalye et al. 2018; Croce & Hein 2020). A plain model is checked on its plain PGD
rows (robust accuracy); a defended system (a model behind a detector or rectifier) on its
adaptive PGD rows (system accuracy), against its adaptive AutoAttack and its FGSM and
noise rows. The flags go into the ``masking_flags`` column of the PGD rows. To make that
deterministic whatever the executor, the runner evaluates PGD cells after every other
cell (:func:`is_checked`), so their partners' rows are known by then.
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from robustkit.defenses.score_checks import sanity_checks
from robustkit.sweep.cells import Cell, is_wrapper

PARTNERS = ("fgsm", "noise", "autoattack")
LARGE_EPS = 1.0


def is_checked(cell: Cell) -> bool:
    """Whether a cell's rows get masking flags: plain PGD on a model without a detector,
    adaptive PGD on a system with one."""
    return cell.attack.attack == "pgd" and cell.attack.adaptive == is_wrapper(cell.job.defense)


def _score(row: Mapping[str, Any]) -> float | None:
    """System accuracy where the row has one (a system), else robust accuracy."""
    for col in ("system_accuracy", "robust_accuracy"):
        v = row.get(col)
        if v not in (None, "") and not math.isnan(float(v)):
            return float(v)
    return None


def _adaptive(row: Mapping[str, Any]) -> bool:
    return str(row.get("adaptive")).lower() in ("true", "1")


class Evidence:
    """Scores of FGSM, noise and AutoAttack rows, per model key, adaptive or not, and eps."""

    def __init__(self, rows: Iterable[Mapping[str, Any]] = ()) -> None:
        self._acc: dict[str, dict[tuple[str, bool, float], float]] = defaultdict(dict)
        for r in rows:
            self.add(r)

    def add(self, row: Mapping[str, Any]) -> None:
        """Remember a row if it is an ok FGSM, noise or AutoAttack row."""
        score = _score(row)
        if row.get("attack_method") in PARTNERS and row.get("status") == "ok" \
                and score is not None:
            key = (str(row["attack_method"]), _adaptive(row), float(row["eps"]))
            self._acc[str(row["model_key"])][key] = score

    def flag(self, cell: Cell, rows: list[dict[str, Any]], *,
             tolerance: float = 0.02) -> list[dict[str, Any]]:
        """``rows`` of a PGD cell with ``masking_flags`` set from the failed checks."""
        system = cell.attack.adaptive
        # A system's AutoAttack partner is the adaptive one; FGSM and noise have none.
        known: list[dict[str, Any]] = [
            {"attack": a, "eps": e, "robust_accuracy": acc}
            for (a, ad, e), acc in self._acc[cell.job.key].items()
            if ad == (system and a == "autoattack")]
        mine: list[dict[str, Any]] = [
            {"attack": "pgd", "eps": float(r["eps"]), "robust_accuracy": _score(r)}
            for r in rows if r.get("status", "ok") == "ok" and _score(r) is not None]
        large = [m for m in mine if m["eps"] >= LARGE_EPS]
        found = sanity_checks(known + [m for m in mine if m["eps"] < LARGE_EPS],
                              tolerance=tolerance, large_eps_row=large[-1] if large else None)
        failed: dict[float, list[str]] = defaultdict(list)
        for c in found:
            if not c.passed:
                failed[float(c.eps)].append(f"{c.check}: {c.detail}")
        return [{**r, "masking_flags": "; ".join(failed.get(float(r["eps"]), []))}
                for r in rows]
