"""Certified bounds in the report: the headline bracket [certified, attacked] and its curve.

Rows of a sweep that certified (``[certify]`` in the spec) carry ``certified_accuracy``,
``exact_share`` and ``certify_method`` (in ``results.csv``'s ``extra`` JSON). Per model
and eps, over the rows of the headline's norm:

- lower = the best certified accuracy of any row (each is a sound lower bound of the same
  model at the same eps), mean over seeds;
- upper = the ranking's headline (lowest attacked accuracy), lowered further where a
  certificate's own witnesses say so (``certified + 1 - exact_share``);
- exact = the largest share of inputs decided by one row, mean over seeds.

A cell whose seeds were not all certified gets no bracket (a mean over some seeds bounds
nothing).

Rows of smoothed certificates (randomized smoothing: ``exact_share`` empty) certify another
classifier and never enter the bracket. Without certificate rows nothing changes: no
bracket is ever shown that was not computed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape

import pandas as pd

from robustkit.report.data import ordered_unique
from robustkit.report.plots import (
    legend_html,
    line_styles,
    percent_axis,
    subplot_grid,
    to_data_uri,
)
from robustkit.report.ranking import Ranking, headline_rows

COLUMNS = ("certified_accuracy", "exact_share", "certify_method")
TOL = 1e-9  # shares are count / n: rounding of sums such as lower + 1 - exact is far below
RANKING_NOTE = (" Where a certificate ran, a cell shows the bracket [certified, attacked] in "
                "which the true robust accuracy lies, and the share of inputs decided exactly.")
LEAD = ("Every attacked accuracy is an upper bound (the attacks failed to break those "
        "inputs); a certificate proves a lower bound (no input of the ball changes the "
        "prediction). The true robust accuracy lies in the band between the two curves; "
        "where they meet, it is exact. Randomized smoothing certifies a smoothed classifier, "
        "not the model, and is not drawn here.")
CAPTION = ("Certified (dashed) and attacked (solid: the headline attack, lowered where the "
           "certificate found adversarial inputs the attacks missed) accuracy against "
           "&epsilon;, one panel per model; the shaded band is where the truth lies.")


@dataclass(frozen=True)
class Bounds:
    """Per label x eps frames: ``lower``, ``upper`` accuracy and ``exact`` share; the
    ``norm`` of every eps (``"L∞"``)."""

    lower: pd.DataFrame
    upper: pd.DataFrame
    exact: pd.DataFrame
    norm: str = ""


def certificate_columns(ok: pd.DataFrame) -> pd.DataFrame:
    """``ok`` with ``COLUMNS`` as real columns (read from ``extra`` JSON where the CSV has
    them there), numeric; the rows unchanged."""
    out = ok.copy()
    parsed = [_json(v) for v in out["extra"]] if "extra" in out.columns else [{}] * len(out)
    for col in COLUMNS:
        found = pd.Series([p.get(col) for p in parsed], index=out.index, dtype="object")
        if col in out.columns:
            found = out[col].astype("object").where(out[col].notna(), found)
        out[col] = found if col == "certify_method" else pd.to_numeric(found, errors="coerce")
    return out


def _json(value: object) -> dict:
    if not isinstance(value, str) or not value.startswith("{"):
        return {}
    try:
        doc = json.loads(value)
    except json.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}


def bounds(ok: pd.DataFrame, r: Ranking) -> Bounds | None:
    """The bracket of each cell of ranking ``r`` (one dataset's rows ``ok``), or None when
    no row of the headline's norm certified (smoothed certificates do not count)."""
    rows, norm = headline_rows(certificate_columns(ok))
    if rows.empty or norm != r.norm:
        return None
    seeds = rows.groupby(["label", "eps"])["seed"].nunique()
    rows = rows[rows["certified_accuracy"].notna() & rows["exact_share"].notna()]
    if rows.empty:
        return None
    # a mean over seeds is bounded only by certificates of every one of those seeds
    certified_seeds = rows.groupby(["label", "eps"])["seed"].nunique()
    whole = certified_seeds[certified_seeds == seeds.reindex(certified_seeds.index)].index
    rows = rows[pd.MultiIndex.from_frame(rows[["label", "eps"]]).isin(whole)]
    if rows.empty:
        return None
    rows = rows.assign(own_upper=rows["certified_accuracy"] + 1 - rows["exact_share"])
    per_seed = rows.groupby(["label", "eps", "seed"], dropna=False).agg(
        lower=("certified_accuracy", "max"), exact=("exact_share", "max"),
        own_upper=("own_upper", "min"))
    mean = per_seed.groupby(level=["label", "eps"]).mean()
    shape = {"index": r.values.index, "columns": r.values.columns}
    lower = mean["lower"].unstack("eps").reindex(**shape)
    if lower.isna().all().all():
        return None
    own = mean["own_upper"].unstack("eps").reindex(**shape)
    upper = r.values.where(own.isna() | (r.values <= own + TOL), own)
    return Bounds(lower, upper, mean["exact"].unstack("eps").reindex(**shape), r.norm)


def cell_notes(b: Bounds) -> pd.DataFrame:
    """Per label x eps the HTML a ranking cell shows instead of its number: the bracket in
    % and the exact share (empty string where that cell has no certificate)."""
    def note(lo: float, hi: float, exact: float) -> str:
        if pd.isna(lo) or pd.isna(hi):
            return ""
        share = "" if pd.isna(exact) else f"<br><span class='by'>exact {100 * exact:.0f}%</span>"
        # lower above upper: a certified sample was broken (the run-time check should have
        # stopped it; rows of different runs mixed in one folder can still show it)
        bad = "<br><span class='badge warn'>contradiction</span>" if lo > hi + TOL else ""
        return f"[{100 * lo:.1f}, {100 * hi:.1f}]{share}{bad}"

    return pd.DataFrame([[note(float(b.lower.at[i, e]), float(b.upper.at[i, e]),
                               float(b.exact.at[i, e]))
                          for e in b.lower.columns] for i in b.lower.index],
                        index=b.lower.index, columns=b.lower.columns)


def bracket_plots(per_dataset: list[tuple[str, pd.DataFrame, Bounds]]
                  ) -> list[tuple[str, str, str]]:
    """One figure per dataset: per model, the attacked (solid) and certified (dashed)
    accuracy over eps with the band between them shaded."""
    figures = []
    for dataset, ok, b in per_dataset:
        labels = [lbl for lbl in b.lower.index if b.lower.loc[lbl].notna().any()]
        if not labels:
            continue
        styles = line_styles(ok[ok["label"].isin(labels)].drop_duplicates("label"))
        fig, axes = subplot_grid(len(labels), width=3.0, height=2.5, ncols=4)
        for ax, label in zip(axes, labels):
            keep = b.lower.loc[label].notna()
            eps = [float(e) for e in b.lower.columns[keep]]
            lo, hi = b.lower.loc[label][keep].to_numpy(float), b.upper.loc[label][keep]
            st = styles[label]
            ax.fill_between(eps, lo, hi.to_numpy(float), color=st["color"], alpha=0.18, lw=0)
            ax.plot(eps, hi.to_numpy(float), color=st["color"], marker=st["marker"], ms=3.5,
                    lw=1.6, label="attacked")
            ax.plot(eps, lo, color=st["color"], marker=st["marker"], ms=3.5, lw=1.6, ls="--",
                    mfc="white", label="certified")
            ax.set_title(str(label), fontsize=9, fontweight="bold")
            ax.set_xlabel(f"eps ({b.norm})" if b.norm else "eps")
            percent_axis(ax, "accuracy")
        legend = legend_html([("upper bound (attacks, and the certificate's witnesses)",
                               {"color": "0.3", "ls": "-", "marker": "o"}),
                              ("certified (lower bound)", {"color": "0.3", "ls": "--",
                                                           "marker": "o"})])
        figures.append((dataset, to_data_uri(fig), legend))
    return figures


def section_body(per_dataset: list[tuple[str, pd.DataFrame, Bounds]]) -> str:
    """The certified-bounds section: the curves, and which certificate ran per model."""
    figures = bracket_plots(per_dataset)
    if not figures:
        return ""
    parts = []
    for (dataset, uri, legend), (_, ok, _b) in zip(figures, per_dataset):
        methods = certificate_columns(ok).dropna(subset=["certified_accuracy", "exact_share"])
        used = ", ".join(f"{escape(str(lbl))}: {escape(', '.join(map(str, ordered_unique(m))))}"
                         for lbl, m in methods.groupby("label", sort=False)["certify_method"])
        where = escape(" Dataset: " + dataset + ".") if dataset else ""
        parts.append(f'<figure class="plot"><img src="{uri}" alt="certified bounds '
                     f'{escape(dataset)}">{legend}<figcaption>{CAPTION}{where} Certificates: '
                     f"{used}.</figcaption></figure>")
    return "".join(parts)
