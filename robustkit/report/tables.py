"""Tables of the report: robust accuracy pivots, defenses, detection, failures.

The frames (``summary_frame``, ``defense_frame``, ``detection_frame``) are plain pandas so
they can be tested against hand-made CSVs; :mod:`robustkit.report.grid` renders them with
every text escaped.
"""
from __future__ import annotations

from html import escape

import pandas as pd

from robustkit.report.data import fmt_num, ordered_unique, run_axis
from robustkit.report.grid import Column, best_mask, cell_text, frame_html, records_html
from robustkit.report.scores import clean_scores, scores

CLEAN = ("clean", "")


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
    cols: list[Column] = [(c, c, cell_text) for c in [*keys[:4], "eps", "seed", "error"]]
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


__all__ = ["best_mask", "defense_frame", "detection_frame", "detection_html", "failures_html",
           "flag_list", "flags_html", "frame_html", "records_html", "summary_frame"]
