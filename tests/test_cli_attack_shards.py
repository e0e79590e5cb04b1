"""``robustkit attack --out-dir`` (per-sample table, rows, RobustBench-style card; a rerun
resumes) and the options that split an evaluation over workers."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from robustkit import models, store
from robustkit.cli import main
from robustkit.evaluate.samples import SAMPLE_COLUMNS

ARGS = ("--model", "lin", "--attack", "pgd", "--eps", "0.05", "--eps", "0.1", "--param",
        "steps=2", "--limit", "40", "--device", "cpu", "--batch-size", "10")
WORKDIR: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    module, rec = models.train("linear", "digits", epochs=3)
    store.save(module, root / "lin", record=rec)
    WORKDIR[:] = [str(root)]


def _run(*args: str):
    return CliRunner().invoke(main, ["attack", *ARGS, "--workdir", WORKDIR[0], *args])


def test_out_dir_keeps_samples_rows_and_card_and_resumes(tmp_path):
    out = tmp_path / "eval"
    res = _run("--out-dir", str(out), "--shard-size", "20", "--save-x-adv", "--json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    samples = pd.read_parquet(out / "samples.parquet")
    assert list(samples.columns) == list(SAMPLE_COLUMNS) and len(samples) == 80
    at = samples[samples["eps"] == 0.1]
    assert at["robust"].mean() == rows[1]["robust_accuracy"]
    card = json.loads((out / "card.json").read_text())
    assert card["eps"] == "0.1" and card["autoattack_acc"] == ""  # pgd is not AutoAttack
    assert card["clean_acc"] == f"{100 * rows[1]['clean_accuracy']:.2f}"
    assert card["robustkit"]["robust_acc"] == f"{100 * rows[1]['robust_accuracy']:.2f}"
    assert len(card["robustkit"]["model_sha256"]) == 64
    assert (out / "x_adv.safetensors").is_file() and (out / "x_adv.json").is_file()
    parts = sorted((out / "samples.parts").glob("part-*.parquet"))
    assert len(parts) == 2
    stamps = [p.stat().st_mtime_ns for p in parts]
    again = _run("--out-dir", str(out), "--shard-size", "20", "--save-x-adv", "--json")
    assert again.exit_code == 0, again.output
    assert [p.stat().st_mtime_ns for p in parts] == stamps  # nothing ran again
    assert pd.read_parquet(out / "samples.parquet").equals(samples)
    other = _run("--out-dir", str(out), "--shard-size", "10")
    assert other.exit_code == 1 and "another evaluation" in other.output


def test_executors_are_exclusive():
    res = _run("--workers", "2", "--devices", "cpu,cpu")
    assert res.exit_code == 2 and "give one of" in res.output
    res = _run("--save-x-adv")
    assert res.exit_code == 2 and "--save-x-adv needs --out-dir" in res.output
