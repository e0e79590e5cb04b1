"""The report's answer first: models ranked by robust accuracy under the strongest attack run.

For each (model, eps) cell the headline is the LOWEST accuracy among the attacks of
``HEADLINE_ATTACKS`` that the sweep ran on it (adaptive attacks included for defended
systems), labelled with the attack that produced it. Robust accuracy is an upper bound
that only a stronger attack can lower, so the worst case over the attacks run is the
honest number; the list's order breaks ties, so that when an AutoAttack row exists it
becomes the label of every cell it ties or wins. A cell no AutoAttack scored (for a
defended system: no adaptive AutoAttack, the strongest attack that knows the detector) is
marked weak: its number is an upper bound from weaker attacks only.
"""
from __future__ import annotations

from dataclasses import dataclass
from html import escape

import pandas as pd

from robustkit.report.data import attack_norms, fmt_num, ordered_unique
from robustkit.report.grid import best_mask, heat
from robustkit.report.scores import clean_scores, method_of, scores

# Per-sample, norm-bounded attacks whose robust accuracy can headline a cell, strongest
# first (the order breaks ties). Universal, noise and patch attacks answer other questions,
# DeepFool's eps is a budget on a minimal perturbation: none of them is here.
HEADLINE_ATTACKS: tuple[str, ...] = (
    "autoattack", "apgd", "apgd_t", "fab", "square", "pgd", "pgd_l2", "fgsm", "fgm")


@dataclass(frozen=True)
class Ranking:
    """Ranked models of one dataset: ``values`` and ``attacks`` are (label x eps) frames,
    ``clean`` the clean accuracy per label (system accuracy for detectors), ``norm`` the
    norm of every eps (``"L∞"``), ``defended`` the labels of defended models, ``weak``
    (label x eps, bool) the cells no AutoAttack scored (adaptive for systems)."""

    values: pd.DataFrame
    attacks: pd.DataFrame
    clean: pd.Series
    norm: str
    defended: frozenset[str]
    weak: pd.DataFrame | None = None


def headline_rows(ok: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Rows of ``ok`` that can headline a cell, with ``score`` and ``rank`` (preference)
    columns, and their norm: the norm of the most preferred attack present."""
    method = method_of(ok)
    rows = ok[method.isin(HEADLINE_ATTACKS) & ok["eps"].notna()].copy()
    if rows.empty:
        return rows, ""
    rows["method"] = method[rows.index]
    rows["rank"] = [HEADLINE_ATTACKS.index(m) for m in rows["method"]]
    norms = attack_norms(rows)
    rows["norm"] = [norms.get(a, "") for a in rows["attack"]]
    # An attack this robustkit does not know has no norm (""): it goes with any norm.
    known = rows.sort_values("rank", kind="stable")["norm"]
    norm = next((n for n in known if n), "")
    rows = rows[(rows["norm"] == norm) | (rows["norm"] == "")].copy()
    rows["score"] = scores(rows)
    rows["clean"] = clean_scores(rows)
    rows["shown"] = [f"{a} (adaptive)" if ad else str(a)
                     for a, ad in zip(rows["attack"], rows["adaptive"])]
    return rows, norm


def ranking(ok: pd.DataFrame) -> Ranking | None:
    """Rank the labels of ``ok`` (one dataset) by their mean headline accuracy over eps > 0.

    The eps axis is the radii every ranked model was attacked at (no holes); when no radius
    is shared, the union. Mean over seeds per attack first, then the minimum over attacks.

    Example:
        >>> ranking(load_run("reports/demo").ok).values  # doctest: +SKIP
    """
    rows, norm = headline_rows(ok)
    if rows.empty or rows["score"].notna().sum() == 0:
        return None
    per_attack = rows.groupby(["label", "eps", "shown"], sort=False).agg(
        score=("score", "mean"), rank=("rank", "min"), adaptive=("adaptive", "max")
    ).reset_index().dropna(subset=["score"])
    # Lowest score wins; among equal scores the preferred attack, then the adaptive one.
    per_attack = per_attack.assign(_ad=~per_attack["adaptive"]).sort_values(
        ["label", "eps", "score", "rank", "_ad"], kind="stable")
    best = per_attack.drop_duplicates(["label", "eps"], keep="first")
    labels = ordered_unique(rows["label"])
    eps_sets = [set(best.loc[best["label"] == lbl, "eps"]) for lbl in labels]
    shared = set.intersection(*eps_sets) if eps_sets else set()
    axis = sorted(shared or set().union(*eps_sets))
    values = best.pivot(index="label", columns="eps", values="score").reindex(
        index=labels, columns=axis)
    attacks = best.pivot(index="label", columns="eps", values="shown").reindex(
        index=labels, columns=axis)
    clean = rows.groupby(["label", "seed"], dropna=False)["clean"].mean().groupby(
        level="label").mean().reindex(labels)
    # eps 0 repeats the clean column: left out.
    positive = [e for e in axis if e > 0] or axis
    values, attacks = values[positive], attacks[positive]
    key = pd.DataFrame({"mean": values.mean(axis=1), "clean": clean})
    order = key.sort_values(["mean", "clean"], ascending=False, kind="stable").index
    defended = frozenset(rows.loc[~rows["undefended"], "label"])
    weak = ~strong_cells(rows).reindex(index=labels, columns=positive, fill_value=False)
    return Ranking(values.loc[order], attacks.loc[order], clean.loc[order], norm, defended,
                   weak.loc[order].astype(bool))


def strong_cells(rows: pd.DataFrame) -> pd.DataFrame:
    """(label x eps) True where AutoAttack scored the cell: its adaptive form for a system
    (a label with adaptive rows), where a non-adaptive attack only met the bare classifier."""
    systems = set(rows.loc[rows["adaptive"].astype(bool), "label"])
    aa = rows[(rows["method"] == "autoattack") & rows["score"].notna()
              & (rows["adaptive"].astype(bool) | ~rows["label"].isin(systems))]
    if aa.empty:
        return pd.DataFrame(dtype=bool)
    return aa.assign(ok=True).pivot_table(index="label", columns="eps", values="ok",
                                          aggfunc="any").fillna(False).astype(bool)


def ranking_html(r: Ranking, *, caption: str, notes: pd.DataFrame | None = None) -> str:
    """The ranking as a compact table: rank, model, clean, then one column per eps holding
    the headline accuracy in % with the attack that produced it underneath (``notes``:
    label x eps HTML shown instead of the number where not empty, e.g. a certified
    bracket from ``robustkit.report.bracket``)."""
    best = best_mask(pd.concat([r.clean.rename("clean"), r.values], axis=1))
    head = "".join(f"<th>{fmt_num(e)}</th>" for e in r.values.columns)
    norm = f" <span class='norm'>{escape(r.norm)}</span>" if r.norm else ""
    body = []
    for i, label in enumerate(r.values.index, start=1):
        tag = " <span class='badge def'>defended</span>" if label in r.defended else ""
        cells = [_rank_cell(r.clean[label], bool(best.at[label, "clean"]), "", "clean")]
        cells += [_rank_cell(r.values.at[label, e], bool(best.at[label, e]),
                             r.attacks.at[label, e], str(e),
                             weak=r.weak is not None and bool(r.weak.at[label, e]),
                             note="" if notes is None else str(notes.at[label, e] or ""))
                  for e in r.values.columns]
        body.append(f"<tr><td class='rank'>{i}</td><th scope='row'>{escape(str(label))}{tag}"
                    f"</th>{''.join(cells)}</tr>")
    return (f'<div class="table-wrap"><table class="grid ranking" id="ranking-table">'
            f"<caption>{caption}</caption><thead><tr><th class='corner' rowspan=2>#</th>"
            f"<th class='corner' rowspan=2>model</th><th rowspan=2>clean</th>"
            f"<th class='grp' colspan='{len(r.values.columns)}'>robust accuracy at &epsilon;"
            f"{norm}</th></tr><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")


WEAK_TITLE = ("no AutoAttack (adaptive for a defended system) at this radius: an upper "
              "bound from weaker attacks")


def _rank_cell(value: object, best: bool, attack: object, col: str, *,
               weak: bool = False, note: str = "") -> str:
    if pd.isna(value):
        return f'<td class="na" data-col="{col}">–</td>'
    v = float(value)  # type: ignore[arg-type]
    cls = ' class="best" title="best in column"' if best else ""
    if weak:
        cls = f' class="weak{" best" if best else ""}" title="{WEAK_TITLE}"'
    style = heat(v)
    by = f"<br><span class='by'>{escape(attack)}</span>" if isinstance(attack, str) and attack else ""
    mark = " <span class='weak-mark'>&#9888; weak attack</span>" if weak else ""
    return (f'<td{cls} data-col="{col}" style="{style}">{note or f"{100 * v:.1f}"}{by}{mark}'
            f"</td>")
