"""HTML report of a sweep: ``build(out_dir)`` turns results.csv, run.json and artifacts/
into one self-contained ``index.html`` (tables, plots, galleries, run metadata).

Every part is optional: a run with failures, without defenses or without artifacts still
gets a report, with the sections it has data for.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape
from pathlib import Path

import pandas as pd

from robustkit.report import artifacts, bracket, gallery, html, meta, plots, ranking, tables
from robustkit.report.data import RunData, attack_norms, load_run, ordered_unique, parsed_specs

__all__ = ["build", "load_run"]

_RANKING_LEAD = (
    "Every model, defended or not, ranked by its accuracy under the strongest attack the sweep "
    "ran on it: for each model and radius &epsilon; the <b>lowest</b> accuracy over the "
    "per-sample attacks run (preference on ties: {prefs}), the attack named under the number. "
    "Defended systems count attacks that know the defense (<i>adaptive</i>); detectors are "
    "scored as systems, where a rejected clean input is an error. Ranked by the mean over "
    "&epsilon;; <b>&#9733;</b> marks the best in each column. <b>&#9888; weak attack</b> marks "
    "a cell no AutoAttack scored (for a detector or rectifier: no adaptive AutoAttack): its "
    "number is an upper bound from weaker attacks and may fall under a stronger one.")
_SUMMARY_LEAD = (
    "Share of test inputs still classified correctly under each attack and radius &epsilon; "
    "(higher is more robust); <i>clean</i> is accuracy without attack. "
    "Cells are shaded from red (0%) to green (100%); "
    "<b>&#9733;</b> marks the best model in each column.")
_UAP_LEAD = (
    "One perturbation <i>v</i>, the same for every input, found per model. Fooling rate = share "
    "of inputs whose predicted label changes once <i>v</i> is added (Moosavi-Dezfooli et al., 2017).")
_CURVES_CAPTION = ("Robust accuracy against the attack radius &epsilon;, one panel per attack, "
                   "one line per model.")
_UAP_CAPTION = ("Fooling rate of universal perturbations against their radius &xi;, one line per "
                "model; a defended model keeps its model's color, with one dash pattern per defense.")
_GALLERY_LEAD = (
    "<b>How to fool a neural network</b> (and every other classifier): each model's universal "
    "perturbation <i>v</i> (blue negative, red positive, scaled to its own range) next to inputs "
    "with <i>v</i> added, captioned <i>clean prediction &rarr; prediction with v</i> "
    "(red when fooled).")
_DEEPFOOL_LEAD = (
    "DeepFool's minimal perturbation <i>r</i> of the same input for each model: the top image "
    "is <i>x + r</i> with its new label, the bottom one <i>r</i> itself. A larger "
    "&#8214;r&#8214;<sub>2</sub> means the input sits farther from the decision boundary.")
_DEFENSE_LEAD = (
    "Accuracy of each defended model (undefended first, for reference) under the attacks of the "
    "sweep; for detectors, system accuracy (a rejected adversarial input counts as defended, a "
    "rejected clean input as an error). <span class='badge warn'>adaptive</span> columns are "
    "attacks that know the defense. Flags report failed sanity checks of PGD, run on every "
    "model PGD attacked (adaptive PGD for detectors): iterative weaker than single-step, "
    "accuracy not falling to 0 at large &epsilon;, noise beating white-box (possible "
    "gradient masking), and PGD above AutoAttack (a weak attack: PGD alone overestimates "
    "robustness). <i>none</i>: every check that could run passed; &ndash;: not checked.")


def _seeds_note(data: RunData) -> str:
    seeds = ordered_unique(data.ok["seed"]) if "seed" in data.ok else []
    return f" Mean over {len(seeds)} seeds." if len(seeds) > 1 else ""


def build(out_dir: str | Path) -> Path:
    """Write ``out_dir/index.html`` from the sweep output in ``out_dir``; return its path.

    Args:
        out_dir: a sweep output folder with ``results.csv`` and optionally ``run.json`` and
            ``artifacts/`` (see reports/README.md).

    Returns:
        The path of the written ``index.html``.

    Raises:
        ValueError: ``out_dir`` is not a directory.

    Example:
        >>> from robustkit import report
        >>> report.build("reports/demo")  # doctest: +SKIP
        PosixPath('reports/demo/index.html')
    """
    data = load_run(out_dir)
    sections = _sections(data, artifacts.scan(data.out_dir))
    subtitle = meta.description(data) or "Adversarial robustness sweep"
    subtitle += f" · folder {data.out_dir.resolve().name}/"
    page = html.page(f"robustkit report: {meta.title(data)}", subtitle,
                     meta.header_facts(data), sections)
    return html.write_atomic(data.out_dir / "index.html", page)


def _sections(data: RunData, arts: artifacts.Artifacts) -> list[html.Section]:
    """The page's sections in reading order, leaving out those without data."""
    ok, S = data.ok, html.Section
    order = ordered_unique(list(ok["model"]) + list(data.failed["model"]))
    problems: list[str] = []

    def part(name: str, fn: Callable[[], str]) -> str:
        # One part that cannot be drawn (odd data) must not cost the reader the whole page.
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - shown in the Failures section instead
            problems.append(f"{name} could not be drawn: {type(exc).__name__}: {exc}")
            return ""

    sections = []
    ranked = part("ranking", lambda: _ranking_body(data))
    if ranked:
        lead = _RANKING_LEAD.format(prefs=" &gt; ".join(ranking.HEADLINE_ATTACKS))
        sections.append(S("ranking", "Ranking", lead, ranked))
    certified = part("certified bounds", lambda: bracket.section_body(_bounds(data)))
    if certified:
        sections.append(S("certified", "Certified bounds", bracket.LEAD, certified))
    summary = part("summary table", lambda: _summary_body(data))
    if summary:
        sections.append(S("summary", "Robust accuracy per attack", _SUMMARY_LEAD, summary))
    curves = part("accuracy plot", lambda: _plots(plots.robust_accuracy_plots(ok), _CURVES_CAPTION))
    if curves:
        sections.append(S("curves", "Accuracy vs radius", "", curves))
    fooling = part("fooling-rate plot", lambda: _plots(plots.fooling_rate_plots(ok), _UAP_CAPTION))
    shown = _gallery_count(data)
    uaps = part("UAP gallery", lambda: gallery.uap_gallery(arts.of("uap"), order, ok, shown))
    if fooling or uaps:
        body = fooling + (f"<h3>Gallery</h3><p class='muted'>{_GALLERY_LEAD}</p>{uaps}" if uaps else "")
        sections.append(S("universal", "Universal perturbations", _UAP_LEAD, body))
    deepfool = part("DeepFool gallery", lambda: gallery.deepfool_gallery(arts.of("deepfool"), order,
                                                                        shown))
    if deepfool:
        sections.append(S("deepfool", "Minimal perturbations", _DEEPFOOL_LEAD, deepfool))
    defense = part("defense tables", lambda: _defense_body(ok, arts))
    if defense:
        sections.append(S("defenses", "Defenses", _DEFENSE_LEAD, defense))
    notes = [f"artifact skipped: {w}" for w in arts.warnings] + problems
    if len(data.failed) or notes:
        body = tables.failures_html(data.failed) + "".join(
            f"<p class='muted'>{escape(n)}</p>" for n in notes)
        sections.append(S("failures", "Failures", "", body))
    if not sections:
        sections.append(S("empty", "No results", "", "<p class='muted'>This folder has no "
                          "results yet: <code>results.csv</code> is missing or empty.</p>"))
    return sections + [S("meta", "Run metadata", "", meta.meta_section(data))]


def _gallery_count(data: RunData) -> int | None:
    """The specs' ``[sweep].gallery`` (the largest, when several specs say), else None."""
    counts = [spec.get("sweep", {}).get("gallery") for spec in parsed_specs(data.run)]
    counts = [c for c in counts if isinstance(c, int) and not isinstance(c, bool)]
    return max(counts) if counts else None


def _ranking_body(data: RunData) -> str:
    datasets = ordered_unique(data.ok["dataset"])
    parts = []
    for ds in datasets:
        sub = data.ok[data.ok["dataset"] == ds]
        r = ranking.ranking(sub)
        if r is None:
            continue
        b = bracket.bounds(sub, r)
        caption = (f"Accuracy in %{escape(' on ' + ds) if ds else ''} under the strongest "
                   f"attack run, per radius &epsilon;.{_seeds_note(data)}"
                   f"{bracket.RANKING_NOTE if b is not None else ''}")
        parts.append((f"<h3>{escape(ds)}</h3>" if len(datasets) > 1 else "")
                     + ranking.ranking_html(r, caption=caption, notes=None if b is None
                                            else bracket.cell_notes(b)))
    return "".join(parts)


def _bounds(data: RunData) -> list[tuple[str, pd.DataFrame, bracket.Bounds]]:
    """Per dataset with certificate rows: (dataset, its rows, the bracket bounds)."""
    out = []
    for ds in ordered_unique(data.ok["dataset"]):
        sub = data.ok[data.ok["dataset"] == ds]
        r = ranking.ranking(sub)
        b = None if r is None else bracket.bounds(sub, r)
        if b is not None:
            out.append((ds, sub, b))
    return out


def _summary_body(data: RunData) -> str:
    datasets = ordered_unique(data.ok["dataset"])
    return "".join(
        (f"<h3>{escape(ds)}</h3>" if len(datasets) > 1 else "")
        + tables.frame_html(tables.summary_frame(data.ok[data.ok["dataset"] == ds],
                                                 data.failed[data.failed["dataset"] == ds]),
                            caption=f"Robust accuracy in %{escape(' on ' + ds) if ds else ''}, "
                            f"per attack and radius &epsilon; (in the attack's norm)."
                            f"{_seeds_note(data)}", norms=attack_norms(data.ok))
        + tables.flags_html(data.ok[(data.ok["dataset"] == ds) & data.ok["undefended"]])
        for ds in datasets)


def _plots(figures: Sequence[tuple[str, ...]], caption: str) -> str:
    return "".join(
        f'<figure class="plot"><img src="{fig[1]}" alt="plot {escape(fig[0])}">{"".join(fig[2:])}'
        f"<figcaption>{caption}{escape(' Dataset: ' + fig[0] + '.') if fig[0] else ''}"
        "</figcaption></figure>"
        for fig in figures)


def _defense_body(ok: pd.DataFrame, arts: artifacts.Artifacts) -> str:
    parts = []
    for ds in ordered_unique(ok["dataset"]):
        frame = tables.defense_frame(ok[ok["dataset"] == ds])
        parts.append(tables.frame_html(frame, caption=f"Defenses{escape(' on ' + ds) if ds else ''}: "
                                       "accuracy in % under attack (system accuracy for detectors).",
                                       row_header="model + defense", norms=attack_norms(ok)))
    detection = tables.detection_html(ok)
    roc = _plots(plots.roc_plots(arts.of("roc")), "Detection ROC curves per detector and "
                 "attack, one curve per radius (darker: larger &epsilon;; dotted: adaptive attack; "
                 "dashed diagonal: chance).")
    if detection or roc:
        parts.append(f"<h3>Detection</h3>{detection}{roc}")
    return "".join(parts)
