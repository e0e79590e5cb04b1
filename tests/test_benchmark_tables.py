"""benchmarks/README.md is generated from the CSVs: it must equal what the script writes."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tables():
    spec = importlib.util.spec_from_file_location("bench_tables", ROOT / "benchmarks" / "tables.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_tables"] = module
    spec.loader.exec_module(module)
    return module


def test_committed_page_equals_the_generated_one(tables) -> None:
    assert (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8") == tables.render(), (
        "benchmarks/README.md is stale: run python benchmarks/tables.py")


def test_a_missing_csv_is_skipped_and_a_new_one_is_a_few_lines(tables, tmp_path, monkeypatch) -> None:
    (tmp_path / "new.csv").write_text("device,threads,dataset,model,seconds,note\n"
                                      "cpu:x,1,digits,svm,0.123456789,a | b\n")
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    page = tables.render([tables.Table("absent.csv", "Absent", "python x.py"),
                          tables.Table("new.csv", "New", "python new.py", finding="It is new.")])
    assert "Absent" not in page
    assert "| dataset | model | seconds | note |" in page  # machine columns left out
    assert "| digits | svm | 0.1235 | a \\| b |" in page
    assert "measured on cpu:x, 1 thread(s)." in page and "**Finding.** It is new." in page


def test_the_page_reports_results_not_history(tables) -> None:
    page = tables.render().lower()
    for word in ("session", "entry ", "reverted", "commit", "tried and dropped"):
        assert word not in page
