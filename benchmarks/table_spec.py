"""What one table of benchmarks/README.md is (see tables.py's docstring)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

Row = dict[str, str]


@dataclass(frozen=True)
class Table:
    """One table of the page (see the module docstring)."""

    csv: str
    title: str
    command: str
    columns: tuple[tuple[str, str], ...] = ()
    where: dict[str, str] = field(default_factory=dict)
    render: Callable[[list[Row]], tuple[list[str], list[list[str]]]] | None = None
    finding: str = ""
    note: str = ""
