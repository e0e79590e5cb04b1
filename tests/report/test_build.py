"""``report.build``: a self-contained page, escaped text, partial data, artifacts, the CLI."""
from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from robustkit import report
from robustkit.report import artifacts, gallery

SMALL_CSV = """dataset,model,family,defense,attack,eps,seed,status,error,clean_accuracy,robust_accuracy
digits,linear,linear,none,fgsm,0.1,0,ok,,0.95,0.40
digits,cnn,cnn,none,fgsm,0.1,0,ok,,0.98,0.60
digits,cnn,cnn,none,pgd,0.1,0,error,ValueError: eps must be >= 0,,
"""


class Tags(HTMLParser):
    """Collects (tag, attrs) of a page and the ids of its sections."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))

    def ids(self, tag: str) -> list[str]:
        return [a.get("id", "") for t, a in self.tags if t == tag]


def parse(path: Path) -> Tags:
    p = Tags()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def test_full_report_is_self_contained(built_report: Path) -> None:
    page = parse(built_report)
    names = {t for t, _ in page.tags}
    assert not names & {"script", "link", "iframe", "object", "embed"}
    refs = [a[k] for _, a in page.tags for k in ("src", "href") if k in a]
    assert all(r.startswith(("data:image/png;base64,", "#")) for r in refs)
    assert sum(1 for t, _ in page.tags if t == "img") >= 3 + 8 * 7 + 3 * 17
    assert page.ids("section") == ["ranking", "summary", "curves", "universal", "deepfool", "defenses",
                                   "failures", "meta"]
    assert not list(built_report.parent.glob(".index.html.*"))  # atomic: no temp file left
    text = built_report.read_text(encoding="utf-8")
    assert ">cnn + detector · pgd (adaptive)</th>" in text  # detection grid, adaptive row


def test_text_from_csv_spec_and_artifacts_is_escaped(tmp_path: Path) -> None:
    evil = "<img src=x onerror=alert(1)>"
    (tmp_path / "results.csv").write_text(SMALL_CSV.replace(",linear,linear,", f',"{evil}",linear,'))
    (tmp_path / "run.json").write_text(json.dumps({"specs": [{"path": "a.toml", "text": "</pre><script>x()</script>"}],
                                                   "device": "<b>cuda</b>"}))
    text = report.build(tmp_path).read_text(encoding="utf-8")
    assert evil not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "<script>" not in text and "&lt;/pre&gt;&lt;script&gt;" in text
    assert "<b>cuda</b>" not in text


def test_attack_only_run_without_metadata_or_artifacts(tmp_path: Path) -> None:
    (tmp_path / "results.csv").write_text(SMALL_CSV)
    page = parse(report.build(tmp_path))
    assert page.ids("section") == ["ranking", "summary", "curves", "failures", "meta"]
    text = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "ValueError: eps must be &gt;= 0" in text and "No <code>run.json</code>" in text


def test_empty_folder_still_gets_a_page(tmp_path: Path) -> None:
    page = parse(report.build(tmp_path))
    assert page.ids("section") == ["empty", "meta"]


def test_broken_artifact_is_a_warning_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "results.csv").write_text(SMALL_CSV)
    bad = tmp_path / "artifacts" / "uap" / "digits" / "cnn__none.safetensors"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a safetensors file")
    text = report.build(tmp_path).read_text(encoding="utf-8")
    assert "artifact skipped: uap/digits/cnn__none.safetensors" in text


def test_build_rejects_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="out_dir"):
        report.build(tmp_path / "f")


def test_scan_classifies_artifacts_by_their_tensors(built_report: Path) -> None:
    arts = artifacts.scan(built_report.parent)
    assert (len(arts.of("uap")), len(arts.of("deepfool")), len(arts.of("roc"))) == (8, 8, 3)
    uap = arts.of("uap")[0]
    assert uap.get("y_adv") is not None and uap.meta["attack"] == "uap"
    assert artifacts.class_names(uap) == [str(k) for k in range(10)]
    assert arts.warnings == []


def test_image_uri_handles_images_flat_inputs_and_non_images() -> None:
    assert gallery.image_uri(np.zeros((1, 8, 8))).startswith("data:image/png;base64,")
    assert gallery.image_uri(np.zeros(64)) is not None  # flat 8x8
    assert gallery.image_uri(np.linspace(-1, 1, 3 * 4 * 4).reshape(3, 4, 4), signed=True)
    assert gallery.image_uri(np.zeros(2)) is None  # a 2-D toy point is no image


def test_cli_report_prints_the_path(tmp_path: Path) -> None:
    from robustkit.cli import main

    (tmp_path / "results.csv").write_text(SMALL_CSV)
    res = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == str(tmp_path / "index.html")
    res = CliRunner().invoke(main, ["report", str(tmp_path), "--open-path"])
    assert res.output.strip() == (tmp_path / "index.html").resolve().as_uri()
    res = CliRunner().invoke(main, ["report", str(tmp_path / "missing")])
    assert res.exit_code == 2


def test_fake_run_uses_the_sweep_columns(built_report: Path) -> None:
    """The fixture speaks the sweep's CSV dialect (reports/README.md); drift fails here."""
    import pandas as pd

    from robustkit.sweep.results import COLUMNS

    cols = set(pd.read_csv(built_report.parent / "results.csv", nrows=1).columns)
    assert cols <= set(COLUMNS), cols - set(COLUMNS)


def test_partial_last_line_and_header_only_files(tmp_path: Path) -> None:
    (tmp_path / "results.csv").write_text(SMALL_CSV + "digits,mlp,mlp,none,fg")  # mid-write
    text = report.build(tmp_path).read_text(encoding="utf-8")
    assert ">mlp</th>" not in text and ">cnn</th>" in text
    (tmp_path / "results.csv").write_text(SMALL_CSV.splitlines()[0] + "\n")
    assert parse(report.build(tmp_path)).ids("section") == ["empty", "meta"]


def test_complete_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    (tmp_path / "results.csv").write_text(SMALL_CSV.rstrip("\n"))  # hand-written file
    text = report.build(tmp_path).read_text(encoding="utf-8")
    assert "ValueError: eps must be &gt;= 0" in text


def test_a_part_that_cannot_be_drawn_is_reported_not_fatal(tmp_path: Path, monkeypatch) -> None:
    from robustkit.report import plots

    def broken(ok):
        raise RuntimeError("odd data")

    monkeypatch.setattr(plots, "robust_accuracy_plots", broken)
    (tmp_path / "results.csv").write_text(SMALL_CSV)
    text = report.build(tmp_path).read_text(encoding="utf-8")
    assert "accuracy plot could not be drawn: RuntimeError: odd data" in text
    assert 'id="summary"' in text
