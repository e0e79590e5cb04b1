"""Read a sweep output directory into what the report needs, and format numbers for it.

The report reads ``results.csv`` (one tidy row per dataset x model x defense x attack x
eps x seed, see reports/README.md) and ``run.json``; every column beyond the
identifiers is optional, so a partial or older run still renders.
"""
from __future__ import annotations

import csv
import functools
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

# Identifier columns, in the order the failures table shows them.
ID_COLUMNS = ("dataset", "model", "family", "defense", "attack", "eps", "seed")
TEXT_COLUMNS = ("dataset", "model", "family", "defense", "attack", "status", "error",
                "device", "masking_flags")
UNIVERSAL_ATTACKS = ("uap", "uap_sgd", "uap_l2", "uap_sgd_l2")
NO_DEFENSE = "none"


@dataclass(frozen=True)
class RunData:
    """A sweep directory as tables: ``ok`` rows, ``failed`` rows, ``run`` metadata."""

    out_dir: Path
    ok: pd.DataFrame
    failed: pd.DataFrame
    run: dict[str, Any] = field(default_factory=dict)


def load_run(out_dir: str | Path) -> RunData:
    """Load ``results.csv`` and ``run.json`` from ``out_dir`` (either may be missing).

    Args:
        out_dir: a sweep output directory.

    Returns:
        RunData with successful and failed rows split, labels added.

    Raises:
        ValueError: ``out_dir`` is not a directory.

    Example:
        >>> load_run("reports/demo").ok.columns  # doctest: +SKIP
    """
    out = Path(out_dir)
    if not out.is_dir():
        raise ValueError(f"out_dir={str(out)!r} is not a directory; pass a sweep output folder")
    path = out / "results.csv"
    run = _read_json(out / "run.json")
    df = spec_order(read_results(path if path.exists() else None), parsed_specs(run))
    status = df["status"].fillna("ok").str.lower()
    failed = (status != "ok") | (df["error"].fillna("").str.len() > 0)
    return RunData(out, df[~failed].reset_index(drop=True), df[failed].reset_index(drop=True), run)


def parsed_specs(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The TOML specs saved in ``run.json`` (``specs[*].text``), parsed; unreadable ones skipped."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: no order from the spec, CSV order instead
        return []
    out = []
    specs = run.get("specs")
    for spec in specs if isinstance(specs, list) else []:
        try:
            out.append(tomllib.loads(spec["text"]))
        except (KeyError, TypeError, tomllib.TOMLDecodeError):
            continue
    return out


def spec_order(df: pd.DataFrame, specs: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows sorted (stably) as the specs list datasets, models, defenses and attacks, then
    by eps and seed: the CSV is in completion order, which depends on the executor."""
    if df.empty:
        return df
    keys = []
    for col, table in (("dataset", "datasets"), ("model", "models"), ("defense", "defenses"),
                       ("attack", "attacks")):
        names = ordered_unique(str(e.get("name", "")) for spec in specs
                               for e in spec.get(table, []) if isinstance(e, dict))
        rank = {n: i for i, n in enumerate(names)}
        # Unknown names (not in any spec) keep their CSV order after the known ones.
        first = {n: len(rank) + i for i, n in enumerate(ordered_unique(df[col]))}
        df = df.assign(**{f"_{col}_rank": [rank.get(v, first.get(v, 0)) for v in df[col]]})
        keys.append(f"_{col}_rank")
    df = df.sort_values([*keys, "eps", "seed"], kind="stable", na_position="last")
    return df.drop(columns=keys).reset_index(drop=True)


def read_results(source: str | Path | io.StringIO | None) -> pd.DataFrame:
    """Read a results CSV with the identifier columns guaranteed and types normalized.

    A partial last line (a sweep still running, or killed mid-write) is ignored.
    """
    if isinstance(source, (str, Path)):
        source = io.StringIO(_complete_lines(Path(source).read_text(encoding="utf-8")))
    try:
        df = pd.read_csv(source) if source is not None else pd.DataFrame()
    except pd.errors.EmptyDataError:
        df = pd.DataFrame()
    for col in ID_COLUMNS + ("status", "error"):
        if col not in df.columns:
            df[col] = pd.NA
    for col in TEXT_COLUMNS:
        if col in df.columns:
            df[col] = df[col].astype("string")
    df["defense"] = df["defense"].fillna(NO_DEFENSE).replace("", NO_DEFENSE)
    df["dataset"] = df["dataset"].fillna("")
    df["model"] = df["model"].fillna(df["family"]).fillna("?")
    df["attack"] = df["attack"].fillna("")
    df["eps"] = pd.to_numeric(df["eps"], errors="coerce")
    df["adaptive"] = _truthy(df["adaptive"]) if "adaptive" in df.columns else False
    # A spec may name its undefended entry freely; the method column says what it is.
    method = df["defense_method"].astype("string") if "defense_method" in df.columns else df["defense"]
    df["undefended"] = (method.fillna(df["defense"]) == NO_DEFENSE).astype(bool)
    df["label"] = [str(m) if u else model_label(m, d)
                   for m, d, u in zip(df["model"], df["defense"], df["undefended"])]
    kind = df["attack_method"].astype("string") if "attack_method" in df.columns else df["attack"]
    df["universal"] = [is_universal(str(k)) for k in kind.fillna(df["attack"])]
    return df


def _complete_lines(text: str) -> str:
    """``text`` without a last line cut short (fewer fields than the header)."""
    head, _, _ = text.partition("\n")
    last = text[text.rfind("\n") + 1:]
    if not last or not head:
        return text
    fields = len(next(csv.reader([head])))
    return text if len(next(csv.reader([last]))) == fields else text[: len(text) - len(last)]


@functools.cache
def is_universal(method: str) -> bool:
    """Whether attack ``method`` finds one perturbation for all inputs (uap, uap_sgd, ...)."""
    if method in UNIVERSAL_ATTACKS or method.startswith("uap"):
        return True
    try:
        from robustkit import attacks

        return attacks.get(method).kind == "universal"
    except Exception:  # noqa: BLE001 - unknown or unimportable attack: not universal
        return False


def model_label(model: str, defense: str) -> str:
    """Row label of a model, with its defense when it has one: ``"cnn + fgsm_rs"``."""
    return str(model) if defense in ("", NO_DEFENSE) else f"{model} + {defense}"


def ordered_unique(values: Any) -> list:
    """Unique values in order of first appearance (spec order beats alphabetical)."""
    return list(dict.fromkeys(v for v in values if not _missing(v)))


def _truthy(col: pd.Series) -> pd.Series:
    text = col.astype("string").str.strip().str.lower()
    return text.isin(["true", "1", "yes", "1.0"]).fillna(False).astype(bool)


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return {"_error": f"could not read {path.name}: {exc}"}
    return data if isinstance(data, dict) else {"value": data}


def fmt_pct(x: Any, digits: int = 1) -> str:
    """``0.9234 -> "92.3%"``; missing -> ``"–"``."""
    if _missing(x):
        return "–"
    return f"{100.0 * float(x):.{digits}f}%"


def fmt_num(x: Any, digits: int = 3) -> str:
    """Compact number (``0.1``, ``8/255`` stays ``0.0314``); missing -> ``"–"``."""
    if _missing(x):
        return "–"
    return f"{float(x):.{digits}g}"


def fmt_seconds(s: Any) -> str:
    """``3.2 -> "3.2 s"``, ``125 -> "2 min 5 s"``, ``4000 -> "1 h 6 min"``."""
    if _missing(s):
        return "–"
    s = float(s)
    if s < 60:
        return f"{s:.2g} s" if s < 10 else f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {round(s % 60)} s"
    return f"{int(s // 3600)} h {round(s % 3600 / 60)} min"


_NORM_NAMES = {"linf": "L\u221e", "l2": "L2", "l1": "L1"}


def attack_norms(ok: pd.DataFrame) -> dict[str, str]:
    """Norm of each attack's eps (``"L2"``, ``"L\u221e"``): its ``norm`` parameter, else the
    registry's; ``""`` when unknown (an attack the installed robustkit does not have)."""
    out: dict[str, str] = {}
    method = ok["attack_method"] if "attack_method" in ok.columns else ok["attack"]
    params = ok["attack_params"] if "attack_params" in ok.columns else pd.Series("", ok.index)
    for attack, meth, raw in zip(ok["attack"], method.fillna(ok["attack"]), params.fillna("")):
        if attack in out:
            continue
        try:
            norm = json.loads(raw).get("norm") if raw else None
        except (json.JSONDecodeError, AttributeError):
            norm = None
        out[attack] = _NORM_NAMES.get(str(norm or _registry_norm(str(meth))), "")
    return out


def _registry_norm(method: str) -> str:
    try:
        from robustkit import attacks

        return attacks.get(method).norm
    except Exception:  # noqa: BLE001 - unknown or unimportable attack: no norm label
        return ""


def run_axis(ok: pd.DataFrame, failed: pd.DataFrame | None = None) -> pd.DataFrame:
    """``ok`` without the (attack, eps) cells that only some of the attack's models ran.

    A spec may run PGD at eps = 1 for a few models only (a masking check): as a table
    column or a plot's x range that cell would be a hole ("–") for every other model. A
    cell is kept when every model (label) that ran the attack (an ok or failed row, any
    eps) ran it at that eps; failed cells stay, as failures.
    """
    if ok.empty:
        return ok
    both = pd.concat([ok, failed]) if failed is not None and not failed.empty else ok
    both = both[both["eps"].notna()]
    keys = ["dataset", "attack", "adaptive"]
    ran = both.groupby(keys, dropna=False)["label"].nunique()
    per_eps = both.groupby([*keys, "eps"], dropna=False)["label"].nunique()
    full = {k for k, n in per_eps.items() if n == ran[k[:3]]}
    # An attack no radius of which every model ran has no common axis to cut down to.
    ragged = {k for k in ran.index if not any(f[:3] == k for f in full)}
    keep = [(d, a, ad, e) in full or (d, a, ad) in ragged or pd.isna(e)
            for d, a, ad, e in zip(ok["dataset"], ok["attack"], ok["adaptive"], ok["eps"])]
    return ok[keep]
