"""Tables: ``<folder>/{train,test}.csv`` (or ``.parquet``) with numeric features and a label.

Every column but the label column is a feature and must be numeric and finite. Labels may
be numbers or strings; the classes are the training split's distinct labels, sorted (as
numbers when they all are integers). Features are scaled to [0, 1] with the TRAINING
split's per-feature min and max (a constant feature is only shifted), so an eps means the
same fraction of each feature's training range; test values outside that range are
clipped into [0, 1] and counted in ``info.clipped``. ``info.scale`` keeps the (min, max)
pairs: :func:`eps_in_units` turns an eps back into each feature's own units, and
:mod:`robustkit.store` stores them with a model trained on the table.

CSV is read strictly with the ``csv`` module (pandas silently pads short rows with NaN).
"""
from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustkit.data.base import Dataset, DatasetInfo

SUFFIXES = (".csv", ".parquet")
Scale = tuple[tuple[float, float], ...]


def load_table(name: str, folder: Path, split: str, *, label: str = "label") -> Dataset:
    """One split of a table dataset, features scaled with the train split's min/max."""
    tr_path = locate(folder, "train")
    tr_x, tr_labels, features = read_table(tr_path, label)
    classes = _classes(tr_labels)
    lo, hi = tr_x.min(axis=0), tr_x.max(axis=0)
    with np.errstate(over="ignore"):
        width = hi - lo
    if not np.isfinite(width).all():
        j = int(np.argmin(np.isfinite(width)))
        raise ValueError(f"{tr_path}: column {features[j]!r}: values from {lo[j]:.4g} to "
                         f"{hi[j]:.4g} span more than float64 holds, so they cannot be "
                         f"scaled to [0, 1]; rescale the column")
    path, x, labels = tr_path, tr_x, tr_labels
    if split != "train":
        path = locate(folder, split)
        x, labels, cols = read_table(path, label)
        if cols != features:
            raise ValueError(f"{path}: feature columns {cols} differ from the train "
                             f"split's {features}")
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({v for v in labels if v not in index})
    if unknown:
        raise ValueError(f"{path}: labels {unknown[:5]} are not among the train split's "
                         f"classes {classes[:10]}")
    with np.errstate(over="ignore"):  # a test value far outside the train range: +-inf,
        scaled = (x - lo) / np.where(hi > lo, width, 1.0)  # then clipped and counted
    clipped = int(((scaled < 0) | (scaled > 1)).sum())
    xt = torch.from_numpy(np.clip(scaled, 0.0, 1.0).astype(np.float32))
    yt = torch.tensor([index[v] for v in labels], dtype=torch.int64)
    scale = tuple((float(a), float(b)) for a, b in zip(lo, hi))
    info = DatasetInfo(name, split, tuple(classes), (x.shape[1],), tuple(features), scale,
                       clipped)
    return Dataset(xt, yt, info)


def locate(folder: Path, split: str) -> Path:
    """``folder/<split>.csv`` or ``folder/<split>.parquet`` (exactly one of them)."""
    found = [folder / f"{split}{s}" for s in SUFFIXES if (folder / f"{split}{s}").is_file()]
    if len(found) != 1:
        what = "both" if found else "neither"
        raise FileNotFoundError(f"{folder}: table dataset needs exactly one of {split}.csv "
                                f"and {split}.parquet, found {what}")
    return found[0]


def read_table(path: Path, label: str) -> tuple[np.ndarray, list[str], list[str]]:
    """Features float64 (N, D), labels as strings (N,) and the feature column names."""
    cols, rows, lines = _read_csv(path) if path.suffix == ".csv" else _read_parquet(path)
    if label not in cols:
        raise ValueError(f"{path}: missing label column {label!r} (columns: "
                         f"{', '.join(cols[:10])}); name another with table:PATH,label=COL")
    if not rows:
        raise ValueError(f"{path}: empty split: no data rows")
    _check_unique(path, cols)
    li = cols.index(label)
    features = [c for i, c in enumerate(cols) if i != li]
    if not features:
        raise ValueError(f"{path}: no feature columns besides the label {label!r}")
    x = np.empty((len(rows), len(features)), dtype=np.float64)
    for r, (row, line) in enumerate(zip(rows, lines)):
        values = [v for i, v in enumerate(row) if i != li]
        try:
            x[r] = [float(v) for v in values]
        except (TypeError, ValueError):
            bad = next(j for j, v in enumerate(values) if not _is_number(v))
            raise ValueError(f"{path}: line {line}, column {features[bad]!r}: non-numeric "
                             f"feature value {values[bad]!r}") from None
    if not np.isfinite(x).all():
        r, j = np.argwhere(~np.isfinite(x))[0]
        raise ValueError(f"{path}: line {lines[r]}, column {features[j]!r}: feature value "
                         f"{x[r, j]} is not finite")
    labels = [_label(row[li]) for row in rows]
    if "" in labels:
        line = lines[labels.index("")]
        raise ValueError(f"{path}: line {line}: missing value in label column {label!r}")
    return x, labels, features


def eps_in_units(eps: float, scale: Scale) -> list[float]:
    """Per feature, what ``eps`` (in the scaled [0, 1] units) is in the feature's own
    units: ``eps * (max - min)`` of the training split (``eps`` for a constant feature).

    Example:
        >>> eps_in_units(0.1, ((0.0, 50.0), (2.0, 2.0)))
        [5.0, 0.1]
    """
    return [eps * (hi - lo if hi > lo else 1.0) for lo, hi in scale]


def unscale(x: torch.Tensor, scale: Scale) -> torch.Tensor:
    """Scaled features (N, D) back in original units (e.g. to show an x_adv)."""
    lo = torch.tensor([a for a, _ in scale], dtype=x.dtype, device=x.device)
    width = torch.tensor([b - a if b > a else 1.0 for a, b in scale], dtype=x.dtype,
                         device=x.device)
    return x * width + lo


def scale_doc(info: DatasetInfo) -> dict[str, Any]:
    """The JSON form of ``info.scale`` that :func:`robustkit.store.save` keeps."""
    if info.scale is None:
        raise ValueError(f"dataset {info.name!r} has no feature scale")
    return {"features": list(info.features), "min": [a for a, _ in info.scale],
            "max": [b for _, b in info.scale]}


def scale_from_doc(doc: dict[str, Any]) -> tuple[tuple[str, ...], Scale]:
    """Feature names and (min, max) pairs from :func:`scale_doc`'s JSON."""
    lo, hi, names = doc.get("min"), doc.get("max"), doc.get("features")
    if not (isinstance(lo, list) and isinstance(hi, list) and isinstance(names, list)
            and len(lo) == len(hi) == len(names)):
        raise ValueError("data_scale must hold equally long lists features, min and max")
    return tuple(map(str, names)), tuple((float(a), float(b)) for a, b in zip(lo, hi))


def describe_eps(eps: Sequence[float], features: Sequence[str], scale: Scale,
                 *, shown: int = 4) -> list[str]:
    """One line per eps: what it is in the first ``shown`` features' original units."""
    out = []
    for e in eps:
        units = eps_in_units(e, scale)
        parts = [f"{f} ±{u:.4g}" for f, u in zip(features[:shown], units)]
        more = f", ... ({len(units)} features)" if len(units) > shown else ""
        out.append(f"eps {e:g} in original units: {', '.join(parts)}{more}")
    return out


def _read_csv(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header:
                raise ValueError(f"{path}: empty file (no header row)")
            cols = [c.strip() for c in header]
            rows, lines = [], []
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                if len(row) != len(cols):
                    raise ValueError(f"{path}: line {reader.line_num}: ragged row with "
                                     f"{len(row)} fields, the header has {len(cols)}")
                rows.append([v.strip() for v in row])
                lines.append(reader.line_num)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path}: not a readable CSV file ({exc})") from None
    return cols, rows, lines


def _read_parquet(path: Path) -> tuple[list[str], list[list[Any]], list[int]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        _check_unique(path, [str(c) for c in pq.read_schema(path).names])
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        msg = " ".join(str(exc).split())
        raise ValueError(f"{path}: not a readable Parquet file ({msg})") from None
    cols = [str(c) for c in table.column_names]
    data = [table.column(c).to_pylist() for c in table.column_names]
    rows = [list(r) for r in zip(*data)]
    return cols, rows, list(range(1, len(rows) + 1))  # "line" = 1-based row number


def _check_unique(path: Path, cols: list[str]) -> None:
    dups = sorted({c for c in cols if cols.count(c) > 1})
    if dups:
        raise ValueError(f"{path}: duplicate column names {dups}; every column needs its "
                         f"own name")


def _is_number(v: Any) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def _label(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


def _classes(labels: list[str]) -> list[str]:
    distinct = set(labels)
    try:
        return sorted(distinct, key=lambda s: (int(s), s))
    except ValueError:
        return sorted(distinct)
