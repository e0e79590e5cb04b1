"""Tables of the report: robust accuracy pivots with best values marked, defenses, failures.

The frames (``summary_frame``, ``defense_frame``) are plain pandas so they can be tested
against hand-made CSVs; ``*_html`` functions render them with every text escaped.
"""
from __future__ import annotations

from collections.abc import Callable
from html import escape
from typing import Any

import pandas as pd

from robustkit.report.data import fmt_num, fmt_seconds, ordered_unique, run_axis
from robustkit.report.ranking import clean_scores, scores

CLEAN = ("clean", "")
# Columns that are not scores: no "best" mark (lower train time is better, flags are text).
NO_BEST = ("flags", "train time", "train ratio", "mean AUC (adaptive)")


def summary_frame(ok: pd.DataFrame, failed: pd.DataFrame | None = None) -> pd.DataFrame:
    """Pivot robust accuracy: one row per model, columns (attack, eps), mean over seeds.

    The first column, ``("clean", "")``, is the clean accuracy. Models and attacks keep the
    order of the CSV; eps is ascending. Undefended models only (defended ones and adaptive
    attacks are the defense table's), unless the run has no undefended model. A radius only
    some of an attack's models ran (``failed`` rows count as run) is not a column.

    Example:
        >>> summary_frame(load_run("reports/demo").ok)  # doctest: +SKIP
    """
    rows = ok[~ok["adaptive"] & (ok["attack"] != "")]
    plain = rows[rows["undefended"]]
    rows = plain if not plain.empty else rows
    if failed is not None and not failed.empty:
        failed = failed[failed["label"].isin(set(rows["label"])) & ~failed["adaptive"]]
    return _pivot(run_axis(rows, failed), "robust_accuracy")


def _pivot(rows: pd.DataFrame, value: str) -> pd.DataFrame:
    if rows.empty or value not in rows.columns:
        return pd.DataFrame()
    labels = ordered_unique(rows["label"])
    attacks = ordered_unique(rows["attack"])
    table = rows.pivot_table(index="label", columns=["attack", "eps"], values=value,
                             aggfunc="mean", dropna=True)
    cols = [(a, e) for a in attacks for e in sorted(rows.loc[rows["attack"] == a, "eps"].dropna().unique())
            if (a, e) in table.columns]
    table = table.reindex(index=labels, columns=pd.MultiIndex.from_tuples(cols, names=["attack", "eps"]))
    if "clean_accuracy" in rows.columns:
        # Per seed first: clean accuracy repeats on every row of a seed, seeds weigh equally.
        per_seed = rows.groupby(["label", "seed"], dropna=False)["clean_accuracy"].mean()
        table.insert(0, CLEAN, per_seed.groupby(level="label").mean().reindex(labels))
    return table


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


def defense_frame(ok: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, defense) for models that have a defense, undefended rows first.

    Columns: clean accuracy, then one per (attack, eps) (``"<attack> (adaptive)"`` for
    adaptive attacks) holding ``system_accuracy`` where the row has one (detectors) and
    ``robust_accuracy`` otherwise; then detection AUC and TPR at 5% FPR (means over the
    attacks and eps > 0), training seconds, training-time ratio and gradient-masking flags.
    """
    rows = _defense_rows(ok)
    if rows.empty:
        return pd.DataFrame()
    labels = [lbl for d in (True, False) for lbl in ordered_unique(
        rows.loc[rows["undefended"] == d, "label"])]
    table = _pivot(rows, "score").reindex(labels)
    table.attrs["no_best"] = _outranked(rows)
    perturbed = rows["eps"] > 0  # at eps = 0 a detector can only be at chance
    for col, name, adaptive in (
            ("detection_auc", "mean AUC", False), ("detection_auc", "mean AUC (adaptive)", True),
            ("tpr_at_5fpr", "mean TPR @ 5% FPR", False), ("train_seconds", "train time", None),
            ("train_ratio", "train ratio", None)):
        if col not in rows.columns:
            continue
        sel = rows if adaptive is None else rows[(rows["adaptive"] == adaptive) & perturbed]
        values = pd.to_numeric(sel[col], errors="coerce")
        if values.notna().any():
            table[(name, "")] = values.groupby(sel["label"]).mean()
    if "masking_flags" in rows.columns:
        flags = {lbl: "; ".join(flag_list(sub)) for lbl, sub in rows.groupby("label")}
        baseline = set(rows.loc[rows["undefended"], "label"])
        # Baselines were not scored as defenses: "-" rather than a reassuring "none".
        table[("flags", "")] = [None if lbl in baseline and not flags.get(lbl) else flags.get(lbl, "")
                                for lbl in labels]
    return table


def _defense_rows(ok: pd.DataFrame) -> pd.DataFrame:
    """Rows of defended models plus their undefended baselines at the (attack, eps) the
    defenses were scored at; ``score`` is system accuracy for detectors, else robust."""
    defended = ok[~ok["undefended"]]
    if defended.empty:
        return defended
    scored = set(zip(defended["attack"], defended["eps"]))
    in_scored = pd.Series([p in scored for p in zip(ok["attack"], ok["eps"])], index=ok.index)
    rows = run_axis(ok[ok["model"].isin(set(defended["model"])) & (ok["attack"] != "")
                       & (~ok["undefended"] | in_scored)]).copy()
    rows["score"] = scores(rows)  # detectors: a rejected clean input is an error
    rows["clean_accuracy"] = clean_scores(rows)
    rows["attack"] = [f"{a} (adaptive)" if ad else a for a, ad in zip(rows["attack"], rows["adaptive"])]
    return rows


def _outranked(rows: pd.DataFrame) -> set[tuple[str, tuple]]:
    """(label, column) cells of non-adaptive attacks (eps > 0) of systems that were also
    scored by adaptive attacks: a non-adaptive attack on a detector attacks the bare
    classifier, so its number says how well the detector caught it, not how robust the
    system is. The adaptive numbers count; these are never marked best."""
    scored = set(rows.loc[rows["adaptive"], "label"])
    plain = rows[~rows["adaptive"] & rows["label"].isin(scored) & (rows["eps"] > 0)]
    return set(zip(plain["label"], zip(plain["attack"], plain["eps"])))


def flag_list(rows: pd.DataFrame) -> list[str]:
    """The gradient-masking flags of ``rows`` as ``"eps=0.3: <check>"`` strings, in order."""
    if "masking_flags" not in rows.columns:
        return []
    out = []
    for eps, text in zip(rows["eps"], rows["masking_flags"]):
        if pd.isna(text):
            continue
        out += [f"eps={fmt_num(eps)}: {p.strip()}" for p in str(text).split(";")
                if p.strip() and p.strip().lower() not in ("nan", "none", "false")]
    return ordered_unique(out)


def flags_html(ok: pd.DataFrame) -> str:
    """A warning list of the sanity checks that failed, per model (empty when none failed)."""
    items = "".join(
        f"<li><b>{escape(str(label))}</b>, {escape(str(attack))} {escape(flag)}</li>"
        for (label, attack), sub in ok.groupby(["label", "attack"], sort=False)
        for flag in flag_list(sub))
    if not items:
        return ""
    return ('<div class="flags"><span class="badge warn">&#9888; possible gradient masking</span>'
            f"<ul>{items}</ul></div>")


# --- rendering -------------------------------------------------------------------------


def _heat(v: float) -> str:
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
        return f'<td{cls} style="{_heat(2 * auc - 1)}">{auc:.3f}</td>'
    style = f' style="{_heat(float(value))}"'  # type: ignore[arg-type]
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


def _text(v: object) -> str:
    return "" if v is None or v is pd.NA or (isinstance(v, float) and pd.isna(v)) else str(v)


def failures_html(failed: pd.DataFrame) -> str:
    """The failed cells with their identifiers and error message, one line per cell and
    error (its eps values joined), so a model that failed to train is one line per attack."""
    if failed.empty:
        return ""
    keys = ["dataset", "model", "defense", "attack", "seed", "error"]
    rows = failed.assign(**{k: failed[k].astype("string").fillna("") for k in keys})
    rows["attack"] = [f"{a} (adaptive)" if ad else a for a, ad in zip(rows["attack"], rows["adaptive"])]
    grouped = rows.groupby(keys, sort=False)["eps"].agg(
        lambda e: ", ".join(fmt_num(v) for v in sorted(e.dropna().unique()))).reset_index()
    cols: list[Column] = [(c, c, _text) for c in [*keys[:4], "eps", "seed", "error"]]
    return records_html(grouped, cols, caption=f"{len(failed)} result row(s) failed; the sweep "
                        "went on without them.")


def detection_frame(ok: pd.DataFrame) -> pd.DataFrame:
    """ROC AUC and TPR at 5% FPR per detector and attack (rows) and eps (columns), mean over
    seeds; rows of adaptive attacks are named ``"<attack> (adaptive)"``."""
    if "detection_auc" not in ok.columns:
        return pd.DataFrame()
    rows = ok[pd.to_numeric(ok["detection_auc"], errors="coerce").notna()].copy()
    if rows.empty:
        return pd.DataFrame()
    many = rows["dataset"].nunique() > 1
    rows["row"] = [f"{d + ': ' if many else ''}{lbl} · {a}{' (adaptive)' if ad else ''}"
                   for d, lbl, a, ad in zip(rows["dataset"], rows["label"], rows["attack"],
                                            rows["adaptive"])]
    parts = []
    for col, name in (("detection_auc", "ROC AUC"), ("tpr_at_5fpr", "TPR @ 5% FPR")):
        if col in rows.columns:
            part = rows.assign(v=pd.to_numeric(rows[col], errors="coerce")).pivot_table(
                index="row", columns="eps", values="v", aggfunc="mean")
            part.columns = pd.MultiIndex.from_tuples([(name, e) for e in part.columns])
            parts.append(part)
    return pd.concat(parts, axis=1).reindex(ordered_unique(rows["row"]))


def detection_html(ok: pd.DataFrame) -> str:
    """The detection grid (see ``detection_frame``) rendered with the best detector marked."""
    return frame_html(detection_frame(ok), row_header="detector · attack",
                      caption="Detection of perturbed inputs per attack and radius: ROC AUC "
                      "(0.5 = chance) and true-positive rate at 5% false positives. An adaptive "
                      "attack knows the detector; a detector that only stops non-adaptive "
                      "attacks shows it here.")
