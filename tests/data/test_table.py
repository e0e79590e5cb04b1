"""Table datasets (``table:PATH``): CSV and Parquet, train-range scaling, clipping, bad files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from robustkit import load_dataset
from robustkit.data.table import eps_in_units, scale_doc, scale_from_doc, unscale

TRAIN = "age,income,label\n20,1000,low\n40,3000,high\n30,2000,low\n60,5000,high\n"
TEST = "age,income,label\n10,2000,low\n50,6000,high\n40,4000,low\n"


def write_csv(root: Path, name: str = "credit", train: str = TRAIN, test: str = TEST) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "train.csv").write_text(train)
    (folder / "test.csv").write_text(test)
    return folder


def write_parquet(root: Path, name: str, columns: dict[str, dict[str, list]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = root / name
    folder.mkdir(parents=True)
    for split, cols in columns.items():
        pq.write_table(pa.table(cols), folder / f"{split}.parquet")
    return folder


def test_csv_is_scaled_with_the_training_min_max(tmp_path):
    write_csv(tmp_path)
    x, y, info = load_dataset("table:credit", "train", root=tmp_path)
    assert info.features == ("age", "income") and info.classes == ("high", "low")
    assert info.scale == ((20.0, 60.0), (1000.0, 5000.0)) and info.input_shape == (2,)
    assert torch.allclose(x, torch.tensor([[0, 0], [0.5, 0.5], [0.25, 0.25], [1, 1]]))
    assert y.tolist() == [1, 0, 1, 0] and info.clipped == 0
    xt, yt, ti = load_dataset("table:credit", "test", root=tmp_path)
    # age 10 -> -0.25 and income 6000 -> 1.25 fall outside the training range: clipped
    assert torch.allclose(xt, torch.tensor([[0, 0.25], [0.75, 1], [0.5, 0.75]]))
    assert ti.clipped == 2 and ti.scale == info.scale and yt.tolist() == [1, 0, 1]


def test_parquet_equals_csv_and_integer_labels_sort_numerically(tmp_path):
    cols = {"train": {"a": [1.0, 3.0, 2.0, 5.0], "b": [0, 10, 5, 20],
                      "y": [10, 2, 2, 10]},
            "test": {"a": [2.0, 4.0], "b": [5, 25], "y": [2, 10]}}
    write_parquet(tmp_path, "pq", cols)
    write_csv(tmp_path, "csv", "a,b,y\n1,0,10\n3,10,2\n2,5,2\n5,20,10\n",
              "a,b,y\n2,5,2\n4,25,10\n")
    for split in ("train", "test"):
        p = load_dataset("table:pq,label=y", split, root=tmp_path)
        c = load_dataset("table:csv,label=y", split, root=tmp_path)
        assert torch.equal(p.x, c.x) and torch.equal(p.y, c.y)
        assert p.info.classes == ("2", "10") and p.info.scale == c.info.scale
    assert p.y.tolist() == [0, 1] and p.info.clipped == 1


def test_eps_back_in_original_units():
    scale = ((20.0, 60.0), (1000.0, 5000.0), (3.0, 3.0))
    assert eps_in_units(0.1, scale) == pytest.approx([4.0, 400.0, 0.1])
    x = torch.tensor([[0.5, 0.25, 0.0]])
    assert torch.allclose(unscale(x, scale), torch.tensor([[40.0, 2000.0, 3.0]]))


def test_scale_round_trips_through_json(tmp_path):
    write_csv(tmp_path)
    info = load_dataset("table:credit", "train", root=tmp_path).info
    assert scale_from_doc(scale_doc(info)) == (info.features, info.scale)


def test_limit_is_stratified_and_keeps_the_full_training_scale(tmp_path):
    rows = "".join(f"{i},{i * i},{i % 2}\n" for i in range(40))
    write_csv(tmp_path, "big", "f,g,label\n" + rows, "f,g,label\n" + rows)
    x, y, info = load_dataset("table:big", "train", root=tmp_path, limit=10)
    assert len(y) == 10 and torch.bincount(y).tolist() == [5, 5]
    assert info.scale == ((0.0, 39.0), (0.0, 1521.0))  # the whole split's range
    assert torch.allclose(x[:, 0] * 39, (x[:, 1] * 1521).sqrt())


@pytest.mark.parametrize("train, words", [
    ("a,label\n1,x\n2,y,3\n", "line 3: ragged row"),
    ("a,label\n1,x\n2\n", "line 3: ragged row"),
    ("a,label\n1,x\nabc,y\n", "line 3, column 'a': non-numeric"),
    ("a,label\n1,x\n,y\n", "line 3, column 'a': non-numeric"),
    ("a,label\n1,x\ninf,y\n", "not finite"),
    ("a,label\n1,x\n2,\n", "line 3: missing value in label column"),
    ("a,b\n1,2\n", "missing label column 'label'"),
    ("a,label\n", "empty split"),
    ("", "empty file"),
])
def test_bad_csv_is_named_in_one_line(tmp_path, train, words):
    folder = write_csv(tmp_path, train=train)
    with pytest.raises(ValueError) as exc:
        load_dataset("table:credit", "train", root=tmp_path)
    msg = str(exc.value)
    assert "\n" not in msg and str(folder / "train.csv") in msg and words in msg


def test_bad_test_split_is_named(tmp_path):
    folder = write_csv(tmp_path, test="age,income,label\n1,2,unseen\n")
    with pytest.raises(ValueError, match="unseen") as exc:
        load_dataset("table:credit", "test", root=tmp_path)
    assert str(folder / "test.csv") in str(exc.value)


def test_bad_parquet_is_named(tmp_path):
    folder = write_parquet(tmp_path, "pq", {"train": {"a": ["x", "y"], "label": [0, 1]},
                                            "test": {"a": [1.0, None], "label": [0, 1]}})
    with pytest.raises(ValueError, match="column 'a': non-numeric") as exc:
        load_dataset("table:pq", "train", root=tmp_path)
    assert str(folder / "train.parquet") in str(exc.value)
    (folder / "train.parquet").write_bytes(b"PAR1 not really parquet")
    with pytest.raises(ValueError, match="not a readable Parquet file") as exc:
        load_dataset("table:pq", "train", root=tmp_path)
    assert "\n" not in str(exc.value)


def test_missing_or_ambiguous_files(tmp_path):
    folder = write_csv(tmp_path)
    (folder / "train.parquet").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="found both"):
        load_dataset("table:credit", "train", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="found neither"):
        load_dataset("table:absent", "train", root=tmp_path)


def test_cli_train_stores_the_scale_and_attack_reports_eps_in_units(tmp_path):
    import json

    from click.testing import CliRunner

    from robustkit import store
    from robustkit.cli import main

    def run(*args):
        return CliRunner().invoke(main, [str(a) for a in args])

    rng = np.random.default_rng(0)
    for split, n in (("train", 200), ("test", 60)):
        age, income = rng.uniform(18, 80, n), rng.uniform(500, 9000, n)
        label = np.where(age / 62 + income / 8500 > 1.2, "high", "low")
        body = "".join(f"{a:.3f},{b:.2f},{c}\n" for a, b, c in zip(age, income, label))
        (tmp_path / "credit").mkdir(exist_ok=True)
        (tmp_path / "credit" / f"{split}.csv").write_text("age,income,label\n" + body)
    ws = tmp_path / "runs"
    res = run("train", "--model", "linear", "--param", "epochs=5", "--dataset",
              "table:credit", "--data-root", tmp_path, "--workdir", ws, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["name"] == "linear-table-credit" and out["features"] == ["age", "income"]
    meta = store.read_model_meta(ws / "linear-table-credit")
    doc = meta.extra["data_scale"]
    assert doc["features"] == ["age", "income"] and meta.dataset == "table:credit"
    written = np.loadtxt(tmp_path / "credit" / "train.csv", delimiter=",", skiprows=1,
                         usecols=(0, 1))
    assert doc["min"] == written.min(axis=0).tolist()
    assert doc["max"] == written.max(axis=0).tolist()
    width = [b - a for a, b in zip(doc["min"], doc["max"])]

    res = run("attack", "--model", "linear-table-credit", "--attack", "fgsm", "--eps", 0.1,
              "--data-root", tmp_path, "--workdir", ws, "--json")
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout)[0]
    assert row["eps_original"] == pytest.approx({"age": 0.1 * width[0],
                                                 "income": 0.1 * width[1]})
    text = run("attack", "--model", "linear-table-credit", "--attack", "fgsm", "--eps", 0.1,
               "--data-root", tmp_path, "--workdir", ws)
    assert text.exit_code == 0 and "eps 0.1 in original units: age ±" in text.stdout

    train = tmp_path / "credit" / "train.csv"
    train.write_text(train.read_text() + "99,99999,high\n")  # the training range changed
    res = run("attack", "--model", "linear-table-credit", "--attack", "fgsm", "--eps", 0.1,
              "--data-root", tmp_path, "--workdir", ws)
    assert res.exit_code == 1 and "differ from those stored" in res.output
