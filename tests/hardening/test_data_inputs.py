"""Issue 21, defects 9-13: folder and table datasets that asked numpy for hundreds of GiB,
overflowed into NaN with numpy warnings, took duplicate columns, accepted bad folder
options with the wrong exit code, or warned on every streamed attack."""
from __future__ import annotations

import warnings

import pytest
from _datafiles import write_folder
from click.testing import CliRunner

from robustkit.cli import main
from robustkit.data import folder as folder_mod
from robustkit.data import load_dataset, parse_name


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize(("option", "why"), [
    ("size=100000", "at most 4096"), ("size=0", "positive"), ("size=-3", "positive"),
    ("size=abc", "positive"), ("size=64x0", "positive"), ("channels=2", "1 or 3"),
])
def test_bad_folder_options_are_usage_errors_before_reading(tmp_path, option, why):
    name = f"folder:nowhere,{option}"
    with pytest.raises(ValueError, match=why):
        parse_name(name)
    res = _run("train", "--model", "linear", "--dataset", name, "--workdir", tmp_path)
    assert res.exit_code == 2 and why in res.output and "--dataset" in res.output
    res = _run("attack", "--model", "m", "--attack", "fgsm", "--eps", "0.1", "--dataset",
               name, "--workdir", tmp_path)
    assert res.exit_code == 2 and why in res.output


def test_decoded_size_is_bounded_by_the_memory_available(tmp_path, monkeypatch):
    write_folder(tmp_path, n=2, size=8)
    monkeypatch.setattr(folder_mod, "available_memory", lambda: 10_000)
    with pytest.raises(ValueError, match=r"size=64 \(3x64x64\).*--limit.*--stream"):
        load_dataset("folder:pets,size=64", "train", root=tmp_path)
    assert load_dataset("folder:pets,size=8", "train", root=tmp_path).x.shape == (6, 3, 8, 8)


def _table(tmp_path, header: str, rows: list[str], name: str = "t"):
    folder = tmp_path / name
    folder.mkdir()
    text = "\n".join([header, *rows]) + "\n"
    for split in ("train", "test"):
        (folder / f"{split}.csv").write_text(text)
    return f"table:{name}"


def test_overflowing_range_names_file_and_column_without_warnings(tmp_path):
    rows = [f"{1.7e308 if i % 2 else -1.7e308},{i},{i % 2}" for i in range(10)]
    name = _table(tmp_path, "big,small,label", rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"train\.csv: column 'big'.*rescale"):
            load_dataset(name, "train", root=tmp_path)
    res = _run("train", "--model", "linear", "--dataset", name, "--data-root", tmp_path,
               "--workdir", tmp_path / "ws", "-q")
    assert res.exit_code == 1 and "column 'big'" in res.output
    assert "Warning" not in res.output and len(res.output.strip().splitlines()) == 1


def test_test_values_far_outside_the_train_range_are_clipped_without_warnings(tmp_path):
    name = _table(tmp_path, "a,label", [f"{i},{i % 2}" for i in range(10)])
    (tmp_path / "t" / "test.csv").write_text("a,label\n1e308,0\n-1e308,1\n5,0\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        te = load_dataset(name, "test", root=tmp_path)
    assert te.x[:, 0].tolist() == [1.0, 0.0, pytest.approx(5 / 9)] and te.info.clipped == 2


def test_duplicate_column_names_are_refused(tmp_path):
    name = _table(tmp_path, "f0,f0,f2,label", [f"{i},{i},{i},{i % 2}" for i in range(6)])
    with pytest.raises(ValueError, match=r"duplicate column names \['f0'\]"):
        load_dataset(name, "train", root=tmp_path)


def test_duplicate_parquet_columns_are_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "p"
    folder.mkdir()
    table = pa.Table.from_arrays([pa.array([1.0, 2.0]), pa.array([3.0, 4.0]),
                                  pa.array([0, 1])], names=["x", "x", "label"])
    for split in ("train", "test"):
        pq.write_table(table, folder / f"{split}.parquet")
    with pytest.raises(ValueError, match=r"duplicate column names \['x'\]"):
        load_dataset("table:p", "train", root=tmp_path)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_streamed_attack_on_an_image_folder_warns_nothing(tmp_path, mode):
    write_folder(tmp_path, n=3, size=8, mode=mode)
    ws = tmp_path / "ws"
    res = _run("train", "--model", "linear", "--param", "epochs=1", "--dataset", "folder:pets",
               "--data-root", tmp_path, "--name", "pets", "--workdir", ws, "-q")
    assert res.exit_code == 0, res.output
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # as the test settings, stated where it matters
        res = _run("attack", "--model", "pets", "--attack", "fgsm", "--eps", "0.1", "--stream",
                   "--workdir", ws, "--data-root", tmp_path, "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert "Warning" not in res.output
