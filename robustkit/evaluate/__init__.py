"""Evaluation: attack x model -> tidy rows, in this process, over shards of workers, or over
a stream of batches.

``evaluate`` (rows per eps) and ``evaluate_samples`` (rows and the per-sample table) live in
:mod:`~robustkit.evaluate.core`; ``evaluate_stream`` in :mod:`~robustkit.evaluate.stream`;
the per-sample table in :mod:`~robustkit.evaluate.samples`, shards in
:mod:`~robustkit.evaluate.shards`, model cards in :mod:`~robustkit.evaluate.cards`.
"""
from __future__ import annotations

from robustkit.evaluate.core import evaluate, evaluate_frame, evaluate_samples
from robustkit.evaluate.samples import COLUMNS
from robustkit.evaluate.stream import evaluate_stream

__all__ = ["COLUMNS", "evaluate", "evaluate_frame", "evaluate_samples", "evaluate_stream"]
