"""One table of benchmarks/README.md: what benchmarks/tables.py renders (see its docstring)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

Row = dict[str, str]


@dataclass(frozen=True)
class Table:
    """One table of the page (see the docstring of benchmarks/tables.py)."""

    csv: str
    title: str
    command: str
    columns: tuple[tuple[str, str], ...] = ()
    where: dict[str, str] = field(default_factory=dict)
    render: Callable[[list[Row]], tuple[list[str], list[list[str]]]] | None = None
    finding: str = ""
    note: str = ""
