"""The run-metadata parts of the report: header facts and the spec/versions/durations section.

``run.json`` is written by the sweep; every key is optional. Known keys get a good place
(spec as text, versions and durations as tables); unknown scalar keys are listed as-is.
"""
from __future__ import annotations

import json
from html import escape
from typing import Any

import pandas as pd

from robustkit.report.data import RunData, fmt_seconds, ordered_unique, parsed_specs

_SPEC_KEYS = ("spec", "specs", "spec_text")
_TABLE_KEYS = ("versions", "durations", "timings", "cells")
_HIDDEN_KEYS = ("runs",)  # the history of earlier runs of the folder: summarized as a count


def _value(key: str, v: Any, *, seconds: bool = False) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and (
            seconds or key.endswith(("seconds", "_s")) or key in ("duration", "elapsed")):
        return fmt_seconds(v)
    if isinstance(v, float):
        return f"{v:.4g}"  # never 0.010358485000324436
    if isinstance(v, list) and all(isinstance(e, (str, int, float)) for e in v):
        return " ".join(str(e) for e in v) if key == "command" else ", ".join(str(e) for e in v)
    if isinstance(v, (dict, list)):
        return json.dumps(v, default=str)
    return str(v)


def kv_table(items: dict[str, Any], *, caption: str = "", seconds: bool = False) -> str:
    """A two-column key/value table, every key and value escaped; ``seconds``: numbers are
    durations in seconds (shown as ``"3.2 s"``, ``"2 min 5 s"``)."""
    if not items:
        return ""
    body = "".join(f"<tr><th scope='row'>{escape(str(k))}</th>"
                   f"<td>{escape(_value(str(k), v, seconds=seconds))}</td></tr>"
                   for k, v in items.items())
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f'<table class="kv">{cap}<tbody>{body}</tbody></table>'


def _spec_text(spec: Any) -> str:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, list) and all(isinstance(s, dict) and "text" in s for s in spec):
        return "\n\n".join(f"# {s.get('path', '')}\n{s['text']}" for s in spec)
    return json.dumps(spec, indent=2, default=str)


def meta_section(data: RunData) -> str:
    """Spec (as text), versions, durations and the remaining run facts."""
    run = data.run
    if not run:
        return "<p class='muted'>No <code>run.json</code> in this folder: metadata unavailable.</p>"
    facts = {k: v for k, v in run.items() if v is not None
             and k not in _SPEC_KEYS + _TABLE_KEYS + _HIDDEN_KEYS and not isinstance(v, dict)}
    if isinstance(run.get("runs"), list) and len(run["runs"]) > 1:
        facts["runs"] = f"{len(run['runs'])} (this folder was resumed)"
    parts = ['<div class="kv-grid">', kv_table(facts, caption="Run")]
    for key in _TABLE_KEYS:
        if isinstance(run.get(key), dict):
            parts.append(kv_table(run[key], caption=key.capitalize(),
                                  seconds=key in ("durations", "timings")))
    parts.append("</div>")
    for key in _SPEC_KEYS:
        if key in run:
            parts.append(f"<h3>Spec</h3><pre class='spec'>{escape(_spec_text(run[key]))}</pre>")
            break
    nested = {k: v for k, v in run.items() if isinstance(v, dict) and v
              and k not in _SPEC_KEYS + _TABLE_KEYS + _HIDDEN_KEYS}
    for key, v in nested.items():  # e.g. model_errors: {model key: message}
        parts.append(f"<h3>{escape(key.replace('_', ' ').capitalize())}</h3>"
                     + kv_table(v))
    return "".join(parts)


def _total_seconds(run: dict[str, Any]) -> float | None:
    for holder in (run, run.get("durations") or {}, run.get("timings") or {}):
        if not isinstance(holder, dict):
            continue
        for key in ("total_seconds", "seconds", "wall_seconds", "duration_seconds", "total"):
            if isinstance(holder.get(key), (int, float)):
                return float(holder[key])
    return None


def title(data: RunData) -> str:
    """The page title: the spec names of the run, else the folder name."""
    specs = data.run.get("specs")
    names = [str(s["name"]) for s in specs if isinstance(s, dict) and s.get("name")] \
        if isinstance(specs, list) else []
    return ", ".join(ordered_unique(names)) or data.out_dir.resolve().name


def description(data: RunData) -> str:
    """The ``[sweep].description`` of the run's specs (from their saved text), if any."""
    found = [spec.get("sweep", {}).get("description") for spec in parsed_specs(data.run)]
    return " ".join(ordered_unique(str(d) for d in found if d))


def header_facts(data: RunData) -> list[tuple[str, str]]:
    """Short (label, value) facts for the page header, plain text (escaped by the caller)."""
    ok, run = data.ok, data.run
    allrows = pd.concat([ok, data.failed])
    facts = [("datasets", ", ".join(ordered_unique(allrows["dataset"])) or "–"),
             ("models", _model_count(allrows)),
             ("attacks", ", ".join(a for a in ordered_unique(allrows["attack"]) if a) or "–"),
             ("results", f"{len(ok)} ok" + (f", {len(data.failed)} failed" if len(data.failed) else ""))]
    defenses = ordered_unique(allrows.loc[~allrows["undefended"].astype(bool), "defense"])
    if defenses:
        facts.insert(3, ("defenses", ", ".join(defenses)))
    device = run.get("device") or (
        ", ".join(ordered_unique(ok["device"])) if "device" in ok.columns else None)
    seeds = run.get("seeds", run.get("seed"))
    seeds = ", ".join(map(str, seeds)) if isinstance(seeds, list) else seeds
    for label, value in (("device", device), ("seeds", seeds),
                         ("started", run.get("started") or run.get("created"))):
        if value not in (None, ""):
            facts.append((label, str(value)))
    total = _total_seconds(run)
    if total is not None:
        facts.append(("duration", fmt_seconds(total)))
    return facts


def _model_count(rows: pd.DataFrame) -> str:
    """How many rows of models the report shows: ``"8 + 11 defended"``."""
    if rows.empty:
        return "0"
    plain = ordered_unique(rows.loc[rows["undefended"].astype(bool), "label"])
    defended = ordered_unique(rows.loc[~rows["undefended"].astype(bool), "label"])
    return f"{len(plain)}" + (f" + {len(defended)} defended" if defended else "")
