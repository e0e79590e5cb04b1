"""The per-sample table of an evaluation (``samples.parquet``) and the rows computed from it.

One record per (sample, eps): ``sample`` (its index in the evaluated data), ``eps``, ``y``,
``clean_pred``, ``adv_pred``, ``robust`` (adv_pred == y), ``broken_by`` (the ensemble's
attack that broke it; "clean" where x itself is misclassified; "" otherwise or for single
attacks), ``l2``, ``linf`` (norms of the applied delta, float32 as computed), ``iterations``
and ``queries`` (-1 where the attack does not count them). Shards are written one file each
(``part-<start>-<stop>.parquet``, atomically) as they finish, so a killed run keeps them;
the rows (robust accuracy, rates, norms) are computed from the table, so a resumed run's
rows equal an uninterrupted run's (``seconds`` aside).
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from robustkit.evaluate.runs import Outcome
from robustkit.tensorfiles import load_tensors, save_tensors

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ("attack", "eps", "n", "clean_accuracy", "robust_accuracy", "success_rate",
           "fooling_rate", "misclassification_rate", "l2_mean", "l2_median", "linf_mean",
           "linf_median", "seconds", "samples_per_second", "device")
SAMPLE_COLUMNS = ("sample", "eps", "y", "clean_pred", "adv_pred", "robust", "broken_by", "l2",
                  "linf", "iterations", "queries")


def shard_frame(name: str, start: int, y: torch.Tensor, clean: torch.Tensor,
                eps_list: list[float], outcomes: list[Outcome]) -> pd.DataFrame:
    """The records of samples ``start..start+len(y)`` at every eps (eps-major); a break
    not named by the attack is "clean" (x itself misclassified) or the attack ``name``."""
    import numpy as np
    import pandas as pd

    n = len(y)
    ids = np.arange(start, start + n, dtype=np.int64)
    frames = []
    for e, o in zip(eps_list, outcomes):
        frames.append(pd.DataFrame({
            "sample": ids, "eps": np.full(n, e, dtype=np.float64), "y": y.numpy(),
            "clean_pred": clean.numpy(), "adv_pred": o.pred.numpy(),
            "robust": (o.pred == y).numpy(), "broken_by": _named(name, y, clean, o),
            "l2": o.l2.float().numpy(), "linf": o.linf.float().numpy(),
            "iterations": o.iterations.numpy(), "queries": o.queries.numpy()}))
    return pd.concat(frames, ignore_index=True)


def _named(name: str, y: torch.Tensor, clean: torch.Tensor, o: Outcome) -> list[str]:
    wrong, broken = (clean != y).tolist(), (o.pred != y).tolist()
    return [b or ("clean" if w else name if k else "")
            for b, w, k in zip(o.broken_by, wrong, broken)]


def write_part(folder: Path, start: int, stop: int, frame: pd.DataFrame,
               seconds: list[float]) -> Path:
    """Write one shard's records atomically, its per-eps seconds in the file's metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"part-{start:010d}-{stop:010d}.parquet"
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           b"robustkit.seconds": json.dumps(seconds).encode()})
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".part-", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def x_adv_name(start: int, stop: int) -> str:
    return f"x_adv-{start:010d}-{stop:010d}"


def write_x_adv(folder: Path, start: int, stop: int, x_adv: dict[float, torch.Tensor]) -> None:
    """One shard's adversarial inputs (safetensors + JSON), one tensor per eps."""
    save_tensors(folder, x_adv_name(start, stop), {f"eps={e:g}": t for e, t in x_adv.items()},
                 meta={"start": start, "stop": stop, "eps": list(x_adv)})


def gather_x_adv(folder: Path, spans: list[tuple[int, int]], out: Path) -> Path:
    """The shards' adversarial inputs as one group ``x_adv`` in ``out`` (this holds all of
    them in memory: only when asked for)."""
    parts = [load_tensors(folder, x_adv_name(a, b))[0] for a, b in sorted(spans)]
    whole = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return save_tensors(out, "x_adv", whole, meta={"samples": sum(b - a for a, b in spans)})


def kept_samples(out: str | Path | None, *, x_adv: bool = False) -> int:
    """How many samples the finished shards in ``out`` hold (what rerunning the same
    evaluation with ``out`` skips; with ``x_adv``, only shards whose adversarial inputs were
    written too count); 0 without ``out`` or finished shards."""
    folder = Path(out) / "samples.parts" if out is not None else None
    if folder is None or not folder.is_dir():
        return 0
    total = 0
    for path in folder.glob("part-*.parquet"):
        start, stop = (int(v) for v in path.stem.split("-")[1:3])
        if not x_adv or (folder / f"{x_adv_name(start, stop)}.json").is_file():
            total += stop - start
    return total


def read_parts(folder: Path, *, x_adv: bool = False
               ) -> dict[tuple[int, int], tuple[pd.DataFrame, list[float]]]:
    """The finished shards in ``folder``: {(start, stop): (records, per-eps seconds)}; with
    ``x_adv``, only those whose adversarial inputs were written too."""
    import pyarrow.parquet as pq

    out = {}
    for path in sorted(folder.glob("part-*.parquet")):
        start, stop = (int(v) for v in path.stem.split("-")[1:3])
        if x_adv and not (folder / f"{x_adv_name(start, stop)}.json").is_file():
            continue
        table = pq.read_table(path)
        meta = (table.schema.metadata or {}).get(b"robustkit.seconds", b"[]")
        out[(start, stop)] = (table.to_pandas(), [float(s) for s in json.loads(meta)])
    return out


def write_table(path: Path, frame: pd.DataFrame) -> None:
    """Write the whole per-sample table atomically (temp file + os.replace)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def rows_from(frame: pd.DataFrame, name: str, eps_list: list[float], seconds: list[float],
              device: str) -> list[dict[str, Any]]:
    """The evaluation rows (``COLUMNS``), one per eps, from the per-sample records."""
    out = []
    for e, sec in zip(eps_list, seconds):
        part = frame[frame["eps"] == e].sort_values("sample")
        t = {c: torch.from_numpy(part[c].to_numpy().copy())
             for c in ("y", "clean_pred", "adv_pred", "l2", "linf")}
        out.append(row(name, e, t["y"], t["clean_pred"], t["adv_pred"], t["l2"], t["linf"], sec,
                       device))
    return out


def row(name: str, eps: float, y: torch.Tensor, clean: torch.Tensor, pred: torch.Tensor,
        l2: torch.Tensor, linf: torch.Tensor, seconds: float, device: str) -> dict[str, Any]:
    """One row of ``COLUMNS`` from per-sample labels, predictions and norms."""
    correct = clean == y
    n = len(y)
    success = _mean(pred[correct] != y[correct]) if correct.any() else math.nan
    return dict(zip(COLUMNS, (
        name, float(eps), n, _mean(correct), _mean(pred == y), success, _mean(pred != clean),
        _mean(pred != y), _mean(l2), _median(l2), _mean(linf), _median(linf), seconds,
        n / seconds if seconds > 0 else math.inf, device,
    )))


def _mean(t: torch.Tensor) -> float:
    return float(t.double().mean())


def _median(t: torch.Tensor) -> float:
    return float(torch.quantile(t.double(), 0.5))
