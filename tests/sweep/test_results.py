"""The append-only results file: whole lines, repair of a torn tail, stable header."""
from __future__ import annotations

import pytest

from robustkit.sweep.results import (
    COLUMNS,
    ResultsWriter,
    done_keys,
    eps_key,
    read_rows,
    repair,
    rewrite_without,
)


def test_rows_round_trip_one_line_each(tmp_path):
    path = tmp_path / "results.csv"
    with ResultsWriter(path) as w:
        w.append([{"cell_id": "a", "eps": 0.1, "status": "ok", "robust_accuracy": 0.5,
                   "error": "line one\nline two", "attack_params": {"steps": 3},
                   "surprise": 7}])
        w.append([{"cell_id": "b", "eps": 0.0, "status": "error", "error": "boom"}])
    lines = path.read_text().splitlines()
    assert lines[0].split(",") == list(COLUMNS) and len(lines) == 3
    rows = read_rows(path)
    assert rows[0]["error"] == "line one | line two"
    assert rows[0]["attack_params"] == '{"steps": 3}' and rows[0]["extra"] == '{"surprise": 7}'
    assert rows[0]["robust_accuracy"] == "0.5" and rows[0]["eps"] == eps_key(0.1)
    assert done_keys(rows) == {("a", "0.1"), ("b", "0.0")}
    assert done_keys(rows, errors=False) == {("a", "0.1")}


def test_repair_cuts_a_torn_last_line_and_appends_continue(tmp_path):
    path = tmp_path / "results.csv"
    with ResultsWriter(path) as w:
        w.append([{"cell_id": "a", "eps": 0.1}])
    whole = path.read_bytes()
    with open(path, "ab") as f:
        f.write(b"b,spec,digits,mlp,ml")  # a run killed mid-write
    assert len(read_rows(path)) == 1  # readers ignore the torn line
    assert repair(path) == len(b"b,spec,digits,mlp,ml")
    assert path.read_bytes() == whole and repair(path) == 0
    with open(path, "ab") as f:
        f.write(b"torn")
    with ResultsWriter(path) as w:  # opening repairs too
        w.append([{"cell_id": "c", "eps": 0.2}])
    assert [r["cell_id"] for r in read_rows(path)] == ["a", "c"]


def test_foreign_header_is_refused(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="another --out"):
        ResultsWriter(path)


def test_rewrite_without_drops_rows_atomically(tmp_path):
    path = tmp_path / "results.csv"
    with ResultsWriter(path) as w:
        w.append([{"cell_id": c, "eps": 0.1, "status": s} for c, s in
                  (("a", "ok"), ("b", "error"), ("c", "ok"))])
    assert rewrite_without(path, {("b", "0.1")}) == 1
    assert [r["cell_id"] for r in read_rows(path)] == ["a", "c"]
    assert path.read_text().splitlines()[0].split(",") == list(COLUMNS)
    assert not list(tmp_path.glob(".*tmp"))


def test_a_second_sweep_on_the_same_folder_is_refused(tmp_path):
    from robustkit.sweep.results import exclusive

    with exclusive(tmp_path), pytest.raises(RuntimeError, match="another sweep is writing"), \
            exclusive(tmp_path):
        pass
    with exclusive(tmp_path):  # released when the first one ends
        pass
