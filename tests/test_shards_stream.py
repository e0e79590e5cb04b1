"""Shards read from the dataset: with a SplitRef, every shard task reads its own samples
(an image folder written here), on this process or on worker processes, and the
per-sample table equals one process holding all the inputs."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from _datafiles import write_folder
from click.testing import CliRunner

from robustkit import load_dataset, models, store
from robustkit.cli import main
from robustkit.data import SplitRef
from robustkit.evaluate import evaluate_samples
from robustkit.evaluate.shards import data_digest
from robustkit.executors import ProcessExecutor

NAME = "folder:pets,size=8"
KW = {"eps": [0.05, 0.1], "batch_size": 4, "shard_size": 4, "seed": 2, "threads": 1,
      "steps": 3}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_folder(root, n=5, size=8)  # 15 test images, 3 classes
    model, _ = models.train("linear", NAME, root=root, epochs=3)
    return root, model


def test_a_split_reads_the_samples_load_dataset_gives(folder):
    root, _ = folder
    x, y, _ = load_dataset(NAME, "test", root=root)
    ref = SplitRef(NAME, "test", str(root))
    xs, ys = ref.read(3, 11)
    assert len(ref) == 15 and torch.equal(xs, x[3:11]) and torch.equal(ys, y[3:11])
    assert data_digest(ref) != data_digest((x[:14], y[:14]))
    with pytest.raises(ValueError, match=r"samples 10..16 are outside the split's 0..15"):
        ref.read(10, 16)


def test_a_split_in_this_process_equals_the_tensors(folder):
    root, model = folder
    x, y, _ = load_dataset(NAME, "test", root=root)
    _, held = evaluate_samples(model, "pgd", x, y, **KW)
    _, read = evaluate_samples(model, "pgd", SplitRef(NAME, "test", str(root)), **KW)
    assert read.equals(held) and len(read) == 30
    with pytest.raises(ValueError, match="y must be None when x is a SplitRef"):
        evaluate_samples(model, "pgd", SplitRef(NAME, "test", str(root)), y, **KW)


@pytest.mark.slow
def test_two_worker_processes_read_their_own_shards(folder, tmp_path):
    root, model = folder
    x, y, _ = load_dataset(NAME, "test", root=root)
    _, one = evaluate_samples(model, "pgd", x, y, **KW)
    ex = ProcessExecutor(2, threads=1)
    try:
        _, two = evaluate_samples(model, "pgd", SplitRef(NAME, "test", str(root)),
                                  executor=ex, out=tmp_path / "run", **KW)
    finally:
        ex.close()
    assert two.equals(one)
    assert pd.read_parquet(tmp_path / "run" / "samples.parquet").equals(one)
    assert len(list((tmp_path / "run" / "samples.parts").glob("part-*.parquet"))) == 4


@pytest.mark.slow
def test_the_cli_streams_shards_to_workers(folder, tmp_path):
    root, model = folder
    store.save(model, tmp_path / "runs" / "lin", family="linear")
    args = ["attack", "--model", "lin", "--workdir", str(tmp_path / "runs"), "--dataset",
            NAME, "--data-root", str(root), "--attack", "pgd", "--eps", "0.1", "--param",
            "steps=3", "--batch-size", "4", "--device", "cpu", "--json"]
    res = CliRunner().invoke(main, [*args, "--stream", "--workers", "2", "--out-dir",
                                    str(tmp_path / "two")])
    assert res.exit_code == 0, res.output
    one = CliRunner().invoke(main, [*args, "--out-dir", str(tmp_path / "one"),
                                    "--shard-size", "8"])
    assert one.exit_code == 0, one.output
    assert json.loads(res.stdout)[0]["robust_accuracy"] == \
        json.loads(one.stdout)[0]["robust_accuracy"]
    a = pd.read_parquet(tmp_path / "two" / "samples.parquet")
    b = pd.read_parquet(tmp_path / "one" / "samples.parquet")
    assert a.equals(b) and len(a) == 15
