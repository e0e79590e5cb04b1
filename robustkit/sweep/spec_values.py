"""Value checks of sweep spec parsing: key types, names, seeds, eps grids (see ``spec``)."""
from __future__ import annotations

import math
import re
from typing import Any

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")

Keys = dict[str, type]


def table_rows(doc: dict, key: str, path: str, problems: list[str], *,
           required: bool = True) -> list[dict]:
    rows = doc.get(key, [])
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        problems.append(f"{path}: {key}: must be an array of tables [[{key}]]")
        return []
    if required and not rows:
        problems.append(f"{path}: {key}: at least one [[{key}]] table is required")
    return rows


def check_keys(row: dict[str, Any], allowed: Keys, where: str, problems: list[str]) -> None:
    for key, value in row.items():
        if key not in allowed:
            problems.append(f"{where}.{key}: unknown key; valid: {', '.join(allowed)}")
        elif not isinstance(value, allowed[key]) or (isinstance(value, bool)
                                                      and allowed[key] is not bool):
            problems.append(f"{where}.{key}: expected {allowed[key].__name__}, "
                            f"got {type(value).__name__} {value!r}")
        elif (key.endswith("_limit") or key == "batch_size") and isinstance(value, int) \
                and value < 1:
            problems.append(f"{where}.{key}: must be a positive integer, got {value}")
        elif isinstance(value, list) and key in ("models", "datasets", "defenses") and \
                not all(isinstance(v, str) for v in value):
            problems.append(f"{where}.{key}: must be a list of names, got {value!r}")


def check_unique(kind: str, names: list[str], path: str, problems: list[str]) -> None:
    seen: set[str] = set()
    for i, n in enumerate(names):
        if not isinstance(n, str):
            continue  # a name of the wrong type is reported by check_keys
        if n in seen:
            problems.append(f"{path}: {kind}[{i}].name: duplicate name {n!r}")
        seen.add(n)


def check_sweep_name(name: str, where: str, problems: list[str]) -> None:
    # The name picks the default output folder reports/<name>: a spec must never choose a
    # folder outside reports/ (only --out may).
    if not SAFE_NAME.fullmatch(name) or ".." in name:
        problems.append(f"{where}: {name!r} is not a plain folder name (1-128 letters, "
                        f"digits, '.', '_', '-' or '+', no '/' or '..'); the output folder "
                        f"is reports/<name>, choose another one with --out")


def seed_values(value: Any, where: str, problems: list[str]) -> list[int]:
    ok = isinstance(value, list) and value and all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)
    if not ok:
        problems.append(f"{where}: must be a non-empty list of integers >= 0, got {value!r}")
        return [0]
    if len(set(value)) != len(value):
        problems.append(f"{where}: duplicate seeds in {value!r}")
    return list(value)


def eps_values(value: Any, where: str, problems: list[str]) -> list[float]:
    if not isinstance(value, list) or not value:
        problems.append(f"{where}: must be a non-empty list of numbers >= 0, got {value!r}")
        return []
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or v < 0:
            problems.append(f"{where}: {v!r} is not a finite number >= 0")
        else:
            out.append(float(v))
    if len(set(out)) != len(out):
        problems.append(f"{where}: duplicate values in {value!r}")
    return out


def name_list(value: Any) -> tuple[str, ...] | None:
    return tuple(value) if isinstance(value, list) else None


def freeze(params: Any) -> dict[str, Any]:
    """TOML arrays become tuples (model defaults are tuples, e.g. ``hidden=(256,)``)."""
    if not isinstance(params, dict):
        return {}

    def conv(v: Any) -> Any:
        if isinstance(v, list):
            return tuple(conv(x) for x in v)
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return {k: conv(v) for k, v in params.items()}
