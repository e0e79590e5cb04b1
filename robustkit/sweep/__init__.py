"""Sweeps: TOML specs -> validated grid -> cells -> append-only results.csv -> report.

``load_spec(path)`` parses a spec, ``validate(specs)`` checks it against the registries
(raising one :class:`SpecError` with every problem), ``expand(specs)`` lists the cells,
``run_sweep(specs, out)`` runs the unfinished ones (here, in local processes or on Dask).

Example:
    >>> from robustkit.sweep import load_spec, run_sweep
    >>> specs = [load_spec("attacks/digits.toml")]  # doctest: +SKIP
    >>> run_sweep(specs, "reports/digits", workers=2).report  # doctest: +SKIP
    '.../reports/digits/index.html'
"""
from __future__ import annotations

from robustkit.sweep.cells import Cell, ModelJob, expand, model_key
from robustkit.sweep.estimate import estimate
from robustkit.sweep.results import COLUMNS, TIMING_COLUMNS, ResultsWriter, read_rows
from robustkit.sweep.runner import SweepSummary, run_sweep
from robustkit.sweep.spec import Spec, SpecError, load_spec, parse_spec
from robustkit.sweep.validate import validate

__all__ = [
           "COLUMNS",
           "TIMING_COLUMNS",
           "Cell",
           "ModelJob",
           "ResultsWriter",
           "Spec",
           "SpecError",
           "SweepSummary",
           "estimate",
           "expand",
           "load_spec",
           "model_key",
           "parse_spec",
           "read_rows",
           "run_sweep",
           "validate",
]
