"""Rendering of the report's tables: pivot frames as two-level grids (attack, eps) with the
best cell of each column marked, cut to the page's width; plain record tables.
"""
from __future__ import annotations

from collections.abc import Callable
from html import escape
from typing import Any

import pandas as pd

from robustkit.report.data import fmt_num, fmt_seconds, ordered_unique

# Columns that are not scores: no "best" mark (lower train time is better, flags are text).
NO_BEST = ("flags", "train time", "train ratio", "mean AUC (adaptive)")


def best_mask(frame: pd.DataFrame, *, higher_is_better: bool = True) -> pd.DataFrame:
    """True where a cell holds its column's best value (ties all marked; never in a column
    with fewer than two values or where all values are equal)."""
    if frame.empty or len(frame) < 2:
        return pd.DataFrame(False, index=frame.index, columns=frame.columns)
    num = frame.apply(pd.to_numeric, errors="coerce")
    best = num.max() if higher_is_better else num.min()
    mask = (num - best).abs() <= 1e-12
    # A column where every model scores the same (all 0% at a large eps) has no best.
    varied = (num.max() - num.min() > 1e-12) & (num.notna().sum() >= 2)
    return mask & varied


def heat(v: float) -> str:
    """Background from red (0) through yellow to green (1) for an accuracy cell."""
    return f"background:hsl({int(120 * max(0.0, min(1.0, v)))},70%,90%)"


def _cell(col: tuple, value: object, best: bool, outranked: bool = False) -> str:
    name = str(col[0])
    cls = ' class="best" title="best in column"' if best else ""
    if outranked and not pd.isna(value):
        return ('<td class="outranked" title="not adaptive: the adaptive columns are the score">'
                f"{100 * float(value):.1f}</td>")  # type: ignore[arg-type]
    if name == "flags":
        if value is None or pd.isna(value):
            return '<td class="na">–</td>'
        if not value:
            return '<td class="ok-flag">none</td>'
        return f'<td class="flag"><span class="badge warn">&#9888; {escape(str(value))}</span></td>'
    if pd.isna(value):
        return '<td class="na">–</td>'
    if name == "train time":
        return f"<td>{fmt_seconds(value)}</td>"
    if name == "train ratio":
        return f"<td>{float(value):.2g}&times;</td>"  # type: ignore[arg-type]
    if "AUC" in name:  # 0.5 is chance: shade from there
        auc = float(value)  # type: ignore[arg-type]
        return f'<td{cls} style="{heat(2 * auc - 1)}">{auc:.3f}</td>'
    style = f' style="{heat(float(value))}"'  # type: ignore[arg-type]
    # Percent without the sign: the caption says "%", and 25 columns must fit a screen.
    return f"<td{cls}{style}>{100 * float(value):.1f}</td>"  # type: ignore[arg-type]


def frame_html(frame: pd.DataFrame, *, caption: str, row_header: str = "model",
               max_width: int = 900, norms: dict[str, str] | None = None) -> str:
    """Render a pivot frame with a two-level header (attack, eps) and best cells marked.

    Wide frames are cut between attacks into tables about ``max_width`` pixels wide (an
    estimate from the text lengths; one attack wider than that keeps its own table), each
    repeating the model column, so that the page needs no sideways scrolling. ``norms``
    (attack -> "L2") labels the attack headers with the norm their eps is measured in.
    """
    if frame.empty:
        return ""
    no_best = frame.attrs.get("no_best", set())
    # An outranked (non-adaptive) number neither wins a column nor sets its best.
    masked = frame.copy()
    for label, col in no_best:
        if label in masked.index and col in masked.columns:
            masked.at[label, col] = float("nan")
    mask = best_mask(masked)
    mask.attrs["no_best"] = no_best
    blocks: list[list[tuple]] = []
    for col in frame.columns:
        if blocks and blocks[-1][0][0] == col[0] and col[1] != "":
            blocks[-1].append(col)
        else:
            blocks.append([col])
    chunks: list[list[tuple]] = [[]]
    width = base = 24 + 8 * max([len(str(i)) for i in frame.index] + [len(row_header)])
    for block in blocks:
        w = _block_width(block, norms or {})
        if chunks[-1] and width + w > max_width:
            chunks.append([])
            width = base
        chunks[-1].extend(block)
        width += w
    return "".join(
        _grid_table(frame, mask, cols, caption if i == 0 else "(continued)", row_header,
                    norms or {})
        for i, cols in enumerate(chunks))


def _block_width(block: list[tuple], norms: dict[str, str]) -> int:
    """Rough rendered width in pixels of one column group (13px tabular digits)."""
    name = str(block[0][0])
    if block[0][1] == "":  # a single column: its header wraps
        return 200 if name == "flags" else 90
    head = 8 * len(name) + (30 if norms.get(name.removesuffix(" (adaptive)")) else 0) + 16
    return max(46 * len(block), head)


def _grid_table(frame: pd.DataFrame, mask: pd.DataFrame, cols: list[tuple], caption: str,
                row_header: str, norms: dict[str, str]) -> str:
    groups = ordered_unique(c[0] for c in cols)
    top = "".join(
        f'<th colspan="{sum(c[0] == g for c in cols)}" '
        f'class="grp{" adaptive" if "(adaptive)" in str(g) else ""}"'
        f'{" rowspan=2" if _single(cols, g) else ""}>{escape(str(g))}{_norm_tag(norms, g)}</th>'
        for g in groups)
    sub = "".join(f"<th>{fmt_num(c[1])}</th>" for c in cols if c[1] != "")
    body = "".join(
        f"<tr><th scope=\"row\">{escape(str(label))}</th>"
        + "".join(_cell(c, frame.at[label, c], bool(mask.at[label, c]) and c[0] not in NO_BEST,
                        (label, c) in mask.attrs.get("no_best", ())).replace(
                            "<td", f'<td data-col="{escape(str(c[0]))}|{escape(str(c[1]))}"', 1)
                  for c in cols) + "</tr>"
        for label in frame.index)
    return (f'<div class="table-wrap"><table class="grid"><caption>{caption}</caption>'
            f'<thead><tr><th class="corner">{escape(row_header)}</th>{top}</tr>'
            f'<tr><th class="corner eps">&epsilon;</th>{sub}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _norm_tag(norms: dict[str, str], group: object) -> str:
    norm = norms.get(str(group).removesuffix(" (adaptive)"), "")
    return f' <span class="norm">{escape(norm)}</span>' if norm else ""


def _single(cols: list[tuple], group: object) -> bool:
    return all(c[1] == "" for c in cols if c[0] == group)


Column = tuple[str, str, Callable[[Any], str]]


def records_html(rows: pd.DataFrame, columns: list[Column], *, caption: str) -> str:
    """A plain table of records: ``columns`` = (column, header, formatter) triples."""
    if rows.empty:
        return ""
    head = "".join(f"<th>{escape(h)}</th>" for _, h, _ in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(fmt(r.get(c)))}</td>" for c, _, fmt in columns) + "</tr>"
        for r in rows.to_dict("records"))
    return (f'<div class="table-wrap"><table class="records"><caption>{caption}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")


def cell_text(v: object) -> str:
    return "" if v is None or v is pd.NA or (isinstance(v, float) and pd.isna(v)) else str(v)
