"""``shard = N`` in a dataset entry: a cell runs as shard tasks, gives the rows of the whole
cell, keeps its per-sample records per shard, and a rerun after a kill runs only the
shards that are missing."""
from __future__ import annotations

import pandas as pd
import pytest

from robustkit.sweep import load_spec, read_rows, run_sweep
from robustkit.sweep.results import ResultsWriter

TIMING = ("seconds", "samples_per_second", "train_seconds", "train_ratio")


def _rows(out):
    return sorted(({k: v for k, v in r.items() if k not in TIMING}
                   for r in read_rows(out / "results.csv")),
                  key=lambda r: (r["cell_id"], r["eps"]))


def _spec(tiny_spec, shard):
    path = tiny_spec(name=f"tiny-{len(shard)}.toml")
    path.write_text(path.read_text().replace("fit_limit = 100", f"fit_limit = 100\n{shard}"))
    return load_spec(path)


@pytest.mark.slow
def test_sharded_cells_equal_whole_cells_and_resume(tmp_path, tiny_spec):
    models = tmp_path / "models"
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    run_sweep([_spec(tiny_spec, "")], whole, models_dir=models, report=False)
    run_sweep([_spec(tiny_spec, "shard = 25")], sharded, models_dir=models, report=False)
    assert _rows(whole) == _rows(sharded)
    cells = sorted((sharded / "samples").iterdir())
    assert len(cells) == 4  # 2 models x 2 attacks
    parts = sorted(cells[0].glob("part-*.parquet"))
    assert [p.name for p in parts] == ["part-0000000000-0000000025.parquet",
                                       "part-0000000025-0000000050.parquet",
                                       "part-0000000050-0000000060.parquet"]
    table = pd.read_parquet(cells[0] / "samples.parquet")
    assert len(table) == 2 * 60 and set(table["eps"]) == {0.0, 0.1}
    # a kill after two of a cell's three shards: its rows and last shard are missing
    kept = [r for r in read_rows(sharded / "results.csv") if r["cell_id"] != cells[0].name]
    (sharded / "results.csv").unlink()
    with ResultsWriter(sharded / "results.csv") as w:
        w.append(kept)
    parts[2].unlink()
    stamps = [p.stat().st_mtime_ns for p in parts[:2]]
    summary = run_sweep([_spec(tiny_spec, "shard = 25")], sharded, models_dir=models,
                        report=False)
    assert summary.run == 1
    assert [p.stat().st_mtime_ns for p in parts[:2]] == stamps  # kept, not run again
    assert _rows(whole) == _rows(sharded)
