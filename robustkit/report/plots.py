"""Plots of the report, drawn with matplotlib's object API (no pyplot state) as PNG data URIs.

matplotlib is imported inside the functions so that ``import robustkit.report`` stays light.
Each function returns a list of ``(title, data_uri)`` figures (curve plots: ``(title,
data_uri, legend_html)``), one per dataset, and an empty list when the run has nothing to
plot. The curves' legend is HTML beside the image, not drawn into it: however many models,
it wraps to the page's width and is never cut off.
"""
from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pandas as pd

from robustkit.report.artifacts import Artifact, eps_of
from robustkit.report.data import attack_norms, model_label, ordered_unique, run_axis

Figure = Any  # matplotlib.figure.Figure, imported lazily


def to_data_uri(fig: Figure) -> str:
    """Encode a figure as a ``data:image/png;base64,...`` URI (everything drawn kept)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, facecolor="white", bbox_inches="tight",
                pad_inches=0.08)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def subplot_grid(n: int, *, width: float = 3.6, height: float = 2.9, ncols: int = 3
          ) -> tuple[Figure, list]:
    from matplotlib.figure import Figure as MplFigure

    ncols = min(n, ncols)
    nrows = -(-n // ncols)
    fig = MplFigure(figsize=(width * ncols, height * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_axis_off()
    return fig, axes[:n]


_DASHES = ["-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1))]
_MARKERS = ["o", "s", "^", "D", "v", "P"]


def line_styles(rows: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Line style per label: the color names the model (the same in every plot), the
    dash pattern and marker name the defense (solid circles: undefended)."""
    from matplotlib import colormaps

    models = ordered_unique(rows["model"])
    defenses = ordered_unique(rows.loc[~rows["undefended"], "defense"])
    cmap = colormaps["tab10" if len(models) <= 10 else "tab20"]
    out = {}
    for label, model, defense, plain in zip(rows["label"], rows["model"], rows["defense"],
                                            rows["undefended"]):
        k = 0 if plain else 1 + defenses.index(defense)
        out[label] = {"color": cmap(models.index(model) % cmap.N),
                      "ls": _DASHES[k % len(_DASHES)], "marker": _MARKERS[k % len(_MARKERS)]}
    return out


def percent_axis(ax: Any, ylabel: str) -> None:
    from matplotlib.ticker import PercentFormatter

    ax.set_ylim(-0.03, 1.03)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def _curves(ok: pd.DataFrame, attacks: list[str], value: str, ylabel: str,
            xlabel: str) -> list[tuple[str, str, str]]:
    figures = []
    for dataset in ordered_unique(ok["dataset"]) or [""]:
        rows = ok[(ok["dataset"] == dataset) & ok["attack"].isin(attacks) & ok["eps"].notna()]
        if rows.empty or value not in rows.columns:
            continue
        present = ordered_unique(rows["attack"])
        styles = line_styles(rows)
        norms = attack_norms(rows)
        fig, axes = subplot_grid(len(present))
        for ax, attack in zip(axes, present):
            sub = rows[rows["attack"] == attack]
            means = sub.groupby(["label", "eps"], sort=True)[value].mean()
            for label in ordered_unique(sub["label"]):
                series = means.loc[label]
                ax.plot(series.index, series.values, ms=3.5, lw=1.6, label=label, **styles[label])
            ax.set_title(attack, fontsize=10, fontweight="bold")
            ax.set_xlabel(f"{xlabel} ({norms[attack]})" if norms.get(attack) else xlabel)
            percent_axis(ax, ylabel)
        figures.append((dataset, to_data_uri(fig), legend_html(
            [(lbl, styles[lbl]) for lbl in ordered_unique(rows["label"])])))
    return figures


_SVG_DASH = {"-": "", "--": "6,3", ":": "1.5,2.5", "-.": "6,2,1.5,2"}
_SVG_MARK = {"o": "<circle cx='14' cy='6' r='3'/>", "s": "<rect x='11' y='3' width='6' height='6'/>",
             "^": "<polygon points='14,2.5 17.5,9 10.5,9'/>", "D": "<polygon points='14,2 18,6 14,10 10,6'/>",
             "v": "<polygon points='14,9.5 17.5,3 10.5,3'/>",
             "P": "<polygon points='12.5,2 15.5,2 15.5,4.5 18,4.5 18,7.5 15.5,7.5 15.5,10 12.5,10 "
                  "12.5,7.5 10,7.5 10,4.5 12.5,4.5'/>"}


def legend_html(entries: list[tuple[str, dict[str, Any]]]) -> str:
    """An HTML legend (inline SVG line samples) for the plot styles of ``line_styles``."""
    from html import escape

    from matplotlib.colors import to_hex

    items = []
    for label, st in entries:
        ls = st["ls"]
        dash = _SVG_DASH.get(ls, "") if isinstance(ls, str) else ",".join(map(str, ls[1]))
        color = to_hex(st["color"])
        items.append(
            f"<li><svg width='28' height='12' aria-hidden='true'><line x1='0' y1='6' x2='28' "
            f"y2='6' stroke='{color}' stroke-width='2' stroke-dasharray='{dash}'/>"
            f"<g fill='{color}'>{_SVG_MARK.get(st['marker'], '')}</g></svg>{escape(label)}</li>")
    return f"<ul class='legend'>{''.join(items)}</ul>"


def robust_accuracy_plots(ok: pd.DataFrame) -> list[tuple[str, str, str]]:
    """Robust accuracy vs eps, one panel per attack, one line per model (defended: dashed)."""
    plain = ok[~ok["adaptive"]]
    undefended = plain[plain["undefended"]]
    rows = run_axis(undefended if not undefended.empty else plain)
    attacks = [a for a in ordered_unique(rows["attack"]) if a]
    return _curves(rows, attacks, "robust_accuracy", "robust accuracy", "eps")


def fooling_rate_plots(ok: pd.DataFrame) -> list[tuple[str, str, str]]:
    """Fooling rate of universal perturbations vs their radius xi, one line per model."""
    rows = ok[ok["universal"] & ~ok["adaptive"]]
    attacks = ordered_unique(rows["attack"])
    return _curves(rows, attacks, "fooling_rate", "fooling rate", "xi") if attacks else []


def _auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under the ROC polyline (trapezoids; fpr sorted ascending)."""
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def roc_plots(rocs: list[Artifact]) -> list[tuple[str, str]]:
    """Detection ROC curves, one panel per detector and attack, one curve per radius
    (darker = larger eps; dotted = the adaptive attack). eps = 0 (clean vs clean) is left out."""
    from matplotlib import colormaps

    figures = []
    for dataset in ordered_unique(a.meta.get("dataset", "") for a in rocs) or [""]:
        mine = [a for a in rocs if a.meta.get("dataset", "") == dataset and eps_of(a) != 0]
        panels = ordered_unique(_roc_panel(a) for a in mine)
        if not panels:
            continue
        radii = sorted({eps_of(a) for a in mine})
        shade = {e: colormaps["viridis"](0.85 - 0.75 * i / max(1, len(radii) - 1))
                 for i, e in enumerate(radii)}
        fig, axes = subplot_grid(len(panels), width=2.9, height=2.9, ncols=4)
        for ax, panel in zip(axes, panels):
            for art in sorted((a for a in mine if _roc_panel(a) == panel), key=eps_of):
                fpr, tpr = np.asarray(art.arrays["fpr"], float), np.asarray(art.arrays["tpr"], float)
                order = np.argsort(fpr, kind="stable")
                try:  # the sweep's own AUC (from all scores) beats one from saved points
                    auc = float(art.meta["auc"])
                except (KeyError, ValueError):
                    auc = _auc(fpr[order], tpr[order])
                adaptive = art.meta.get("adaptive", "").lower() in ("true", "1", "yes")
                ax.plot(fpr[order], tpr[order], lw=1.5, ls=":" if adaptive else "-",
                        color=shade[eps_of(art)],
                        label=f"{eps_of(art):.3g}{' adaptive' if adaptive else ''}: {auc:.2f}")
            ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
            ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false positive rate",
                   ylabel="true positive rate", aspect="equal")
            ax.set_title(panel, fontsize=9, fontweight="bold")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6.5, loc="lower right", title="eps: AUC", title_fontsize=6.5)
        figures.append((dataset, to_data_uri(fig)))
    return figures


def _roc_panel(art: Artifact) -> str:
    return f"{model_label(art.meta['model'], art.meta['defense'])} · {art.meta.get('attack', '')}"
