"""The score of a results row as the report shows it: system accuracy for detectors (a
rejected clean input is an error), robust accuracy otherwise.
"""
from __future__ import annotations

import pandas as pd


def method_of(rows: pd.DataFrame) -> pd.Series:
    """The registry name of each row's attack (``attack_method``, else the display name)."""
    if "attack_method" in rows.columns:
        return rows["attack_method"].astype("string").fillna(rows["attack"])
    return rows["attack"]


def scores(rows: pd.DataFrame) -> pd.Series:
    """Accuracy of each row as the user sees it: system accuracy for detectors, else robust
    accuracy; at eps = 0 a rejected clean input is an error, so eps 0 scores the clean
    (system) accuracy."""
    score = pd.to_numeric(rows.get("robust_accuracy", pd.Series(float("nan"), rows.index)),
                          errors="coerce")
    if "system_accuracy" in rows.columns:
        score = pd.to_numeric(rows["system_accuracy"], errors="coerce").fillna(score)
    if "clean_system_accuracy" not in rows.columns:
        return score
    clean = pd.to_numeric(rows["clean_system_accuracy"], errors="coerce")
    return score.where(~((rows["eps"] == 0) & clean.notna()), clean)


def clean_scores(rows: pd.DataFrame) -> pd.Series:
    """Clean accuracy per row, the detector's system accuracy where it has one."""
    clean = pd.to_numeric(rows.get("clean_accuracy", pd.Series(float("nan"), rows.index)),
                          errors="coerce")
    if "clean_system_accuracy" in rows.columns:
        clean = pd.to_numeric(rows["clean_system_accuracy"], errors="coerce").fillna(clean)
    return clean
