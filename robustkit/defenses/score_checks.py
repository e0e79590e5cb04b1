"""The sanity checks of ``robustkit.defenses.score`` (see its docstring for what each
one compares): plain functions over evaluation rows, no attack runs here.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CHECKS = ("iterative_not_weaker", "single_step_not_helping", "large_eps",
          "white_box_beats_noise", "pgd_close_to_autoattack", "black_box_not_stronger")
# A failed PGD-vs-AutoAttack check says PGD is weak here, not that gradients are masked.
WEAK_PGD = "pgd_close_to_autoattack"


@dataclass(frozen=True)
class SanityCheck:
    """One check at one eps: what was compared, and whether it passed."""

    check: str
    eps: float
    passed: bool
    detail: str


def sanity_checks(rows: Sequence[Mapping[str, Any]], *, tolerance: float = 0.02,
                  large_eps_row: Mapping[str, Any] | None = None) -> list[SanityCheck]:
    """Run the checks on evaluation rows (``attack``, ``eps``, ``robust_accuracy``).

    Example:
        >>> rows = [{"attack": "fgsm", "eps": 0.1, "robust_accuracy": 0.5},
        ...         {"attack": "pgd", "eps": 0.1, "robust_accuracy": 0.7}]
        >>> [c.passed for c in sanity_checks(rows)]
        [False]
    """
    acc = {(r["attack"], float(r["eps"])): float(r["robust_accuracy"]) for r in rows}
    square = {float(r["eps"]): r["square_only"] for r in rows
              if r["attack"] == "autoattack" and r.get("square_only") is not None}
    clean = {float(r["eps"]): float(r["clean_accuracy"]) for r in rows
             if r["attack"] == "fgsm" and r.get("clean_accuracy") is not None}
    out = []
    for e in sorted({float(r["eps"]) for r in rows}):
        fg, pg, nz = acc.get(("fgsm", e)), acc.get(("pgd", e)), acc.get(("noise", e))
        if fg is not None and pg is not None:
            out.append(SanityCheck("iterative_not_weaker", e, pg <= fg + tolerance,
                                   f"PGD {pg:.3f} vs FGSM {fg:.3f}"))
        if fg is not None and e in clean and e > 0:
            out.append(SanityCheck("single_step_not_helping", e, fg <= clean[e] + tolerance,
                                   f"FGSM {fg:.3f} vs clean {clean[e]:.3f}"))
        wb = [a for a in (fg, pg) if a is not None]
        if nz is not None and wb and e > 0:
            out.append(SanityCheck("white_box_beats_noise", e, min(wb) <= nz + tolerance,
                                   f"white-box {min(wb):.3f} vs noise {nz:.3f}"))
        aa = acc.get(("autoattack", e))
        if aa is not None and pg is not None and e > 0:
            out.append(SanityCheck("pgd_close_to_autoattack", e, pg <= aa + tolerance,
                                   f"PGD {pg:.3f} vs AutoAttack {aa:.3f}: PGD alone "
                                   "overestimates robust accuracy"))
        if e in square and e > 0:
            out.append(SanityCheck("black_box_not_stronger", e, square[e] <= tolerance,
                                   f"Square broke {square[e]:.3f} of the samples every "
                                   "gradient attack failed on"))
    if large_eps_row is not None:
        a = float(large_eps_row["robust_accuracy"])
        out.append(SanityCheck("large_eps", float(large_eps_row["eps"]), a <= tolerance,
                               f"PGD accuracy {a:.3f} (should be ~0)"))
    return out
