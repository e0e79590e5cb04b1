"""The ``certify`` entry of sweep specs: which cells also certify, with what.

A spec-wide table, or a model's own entry (which wins for that model)::

    [certify]
    method = "auto"          # a certificate name, or auto (the tightest that applies)
    time_limit = 5           # seconds per sample for certificates that search
    attacks = ["autoattack"] # optional: only these attacks' cells (default: every cell)
    models = ["linear"]      # optional, spec-wide table only: only these models

    [[models]]
    name = "mlp"
    family = "mlp"
    certify = { method = "milp", time_limit = 30 }

A cell that certifies gets ``certified_accuracy``, ``exact_share``, ``certify_method`` and
``certify_seconds`` on its rows, and the certificate is checked against that cell's
attack (a contradiction fails the cell). The certificate settings are part of the cell
id, so adding them to a finished sweep runs its cells again. Cells of detector-like
defenses (scored as systems) and of streamed datasets are not certified.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

CERTIFY_KEYS = ("method", "time_limit", "params", "attacks", "models")
OPTION_KEYS = ("method", "time_limit", "params")


def parse_certify(raw: Any, where: str, problems: list[str], *, spec_wide: bool
                  ) -> dict[str, Any] | None:
    """The shape of a ``certify`` entry (names are checked by ``certify_problems``)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a table (method, time_limit, ...), got "
                        f"{type(raw).__name__} {raw!r}")
        return None
    valid = CERTIFY_KEYS if spec_wide else tuple(k for k in CERTIFY_KEYS if k != "models")
    for key in sorted(set(raw) - set(valid)):
        problems.append(f"{where}.{key}: unknown key; valid: {', '.join(valid)}")
    method = raw.get("method", "auto")
    if not isinstance(method, str):
        problems.append(f"{where}.method: expected a certificate name, got {method!r}")
    limit = raw.get("time_limit", 30.0)
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or \
            not 0 < limit < math.inf:
        problems.append(f"{where}.time_limit: {limit!r} is not valid: expected seconds > 0")
    if not isinstance(raw.get("params", {}), dict):
        problems.append(f"{where}.params: expected a table, got {raw['params']!r}")
    for key in ("attacks", "models"):
        names = raw.get(key)
        if names is not None and (not isinstance(names, list)
                                  or not all(isinstance(n, str) for n in names)):
            problems.append(f"{where}.{key}: must be a list of names, got {names!r}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in valid}


def cell_certify(spec_entry: Mapping[str, Any] | None, model_entry: Mapping[str, Any] | None,
                 model: str, attack: str) -> dict[str, Any] | None:
    """The certificate options of the cell (model ``model``, attack display name
    ``attack``), or None when it does not certify."""
    entry = model_entry
    if entry is None and spec_entry is not None:
        names = spec_entry.get("models")
        entry = spec_entry if names is None or model in names else None
    if entry is None:
        return None
    attacks = entry.get("attacks")
    if attacks is not None and attack not in attacks:
        return None
    return {k: entry[k] for k in OPTION_KEYS if k in entry}


def certify_problems(path: str, spec_entry: Mapping[str, Any] | None,
                     model_entries: Mapping[str, Mapping[str, Any] | None],
                     attacks: set[str], streamed: list[str]) -> list[str]:
    """What validation says about a spec's certify entries: method names and option
    values (``robustkit.certify.columns.certify_options``), the models and attacks they
    name, and streamed datasets (not certified)."""
    from robustkit.certify.columns import certify_options

    out = []
    named = [(f"{path}: certify", spec_entry)] + [
        (f"{path}: models[{m!r}].certify", e) for m, e in model_entries.items()]
    for where, entry in named:
        if entry is None:
            continue
        try:
            certify_options({k: v for k, v in entry.items() if k in OPTION_KEYS})
        except (TypeError, ValueError) as exc:
            out.append(f"{where}: {exc}")
        for key, declared in (("attacks", attacks), ("models", set(model_entries))):
            out += [f"{where}.{key}: {n!r} is not one of this spec's {key}; valid: "
                    f"{', '.join(sorted(declared))}" for n in entry.get(key) or ()
                    if n not in declared]
        if streamed:
            out.append(f"{where}: datasets {streamed} are streamed (stream = true), whose "
                       f"cells are not certified; certify another dataset entry")
    return out
