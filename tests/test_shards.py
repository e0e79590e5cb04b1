"""Sharded evaluation: shards on workers give the per-sample table and rows of one process,
finished shards are kept and a rerun resumes from them, a universal v is fitted once."""
from __future__ import annotations

import pytest
import torch
from _fixtures import digits, fitted_model

from robustkit.evaluate import evaluate, evaluate_samples
from robustkit.evaluate.samples import SAMPLE_COLUMNS
from robustkit.evaluate.shards import plan
from robustkit.executors import DaskExecutor, ProcessExecutor

N = 60
AA = {"version": "fast", "steps": 5, "targets": 2}


@pytest.fixture(scope="module")
def task():
    te = digits("test")
    return fitted_model("mlp"), te.x[:N], te.y[:N]


def _same(a, b):
    """Per-sample tables equal in every column, value for value."""
    assert list(a.columns) == list(SAMPLE_COLUMNS)
    assert a.equals(b)


def _rows_without_time(rows):
    return [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_second")}
            for r in rows]


def test_plan_makes_shards_of_whole_batches():
    assert plan(10, 4, 3) == [(0, 6), (6, 10)]
    assert plan(7, 100, 5) == [(0, 7)]
    assert plan(6, 1, 2) == [(0, 2), (2, 4), (4, 6)]


@pytest.mark.parametrize("attack, params", [("autoattack", AA), ("pgd", {"steps": 3}),
                                            ("square", {"queries": 20}),
                                            ("deepfool", {"max_iter": 5})])
def test_shards_equal_one_run_sample_for_sample(task, attack, params):
    model, x, y = task
    rows, whole = evaluate_samples(model, attack, x, y, eps=[0.05, 0.1], batch_size=20,
                                   seed=3, **params)
    seen = []
    rows2, sharded = evaluate_samples(model, attack, x, y, eps=[0.05, 0.1], batch_size=20,
                                      seed=3, shard_size=20, on_shard=seen.append, **params)
    assert sorted((r.start, r.stop) for r in seen) == [(0, 20), (20, 40), (40, 60)]
    _same(whole, sharded)
    assert _rows_without_time(rows) == _rows_without_time(rows2)
    assert len(whole) == 2 * N and set(whole["eps"]) == {0.05, 0.1}
    assert (whole["robust"] == (whole["adv_pred"] == whole["y"])).all()


def test_table_names_who_broke_each_sample(task):
    model, x, y = task
    _, frame = evaluate_samples(model, "autoattack", x, y, eps=0.1, **AA)
    wrong = frame["clean_pred"] != frame["y"]
    assert (frame.loc[wrong, "broken_by"] == "clean").all()
    broken = ~wrong & ~frame["robust"]
    assert set(frame.loc[broken, "broken_by"]) <= {"apgd_ce", "apgd_t"} and broken.any()
    assert (frame.loc[frame["robust"], "broken_by"] == "").all()
    _, sq = evaluate_samples(model, "square", x, y, eps=0.1, queries=20)
    assert sq["queries"].between(1, 20).all()  # Square counts its queries per sample


@pytest.mark.slow
def test_two_worker_processes_equal_one_process(task):
    model, x, y = task
    rows, one = evaluate_samples(model, "autoattack", x, y, eps=[0.05, 0.1], batch_size=10,
                                 shard_size=10, threads=1, **AA)
    ex = ProcessExecutor(2, threads=1)
    try:
        rows2, two = evaluate_samples(model, "autoattack", x, y, eps=[0.05, 0.1],
                                      batch_size=10, shard_size=10, executor=ex, **AA)
    finally:
        ex.close()
    _same(one, two)
    assert _rows_without_time(rows) == _rows_without_time(rows2)


@pytest.mark.slow
def test_a_dask_cluster_equals_one_process(task):
    distributed = pytest.importorskip("distributed")
    model, x, y = task
    _, one = evaluate_samples(model, "pgd", x, y, eps=0.1, batch_size=15, shard_size=15,
                              threads=1, steps=3)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        ex = DaskExecutor(client)
        _, two = evaluate_samples(model, "pgd", x, y, eps=0.1, batch_size=15, shard_size=15,
                                  executor=ex, threads=1, steps=3)
    _same(one, two)


class Killed(Exception):
    pass


def _die_after(k):
    """An on_shard callback that raises Killed at the k-th finished shard."""
    done = []

    def on_shard(res):
        done.append(res)
        if len(done) == k:
            raise Killed
    return on_shard


def test_a_killed_run_resumes_from_its_finished_shards(task, tmp_path):
    model, x, y = task
    kw = {"eps": [0.05, 0.1], "batch_size": 10, "shard_size": 10, "seed": 1, "steps": 3}
    _, full = evaluate_samples(model, "pgd", x, y, **kw)

    with pytest.raises(Killed):
        evaluate(model, "pgd", x, y, out=tmp_path, on_shard=_die_after(2), **kw)
    assert len(list((tmp_path / "samples.parts").glob("part-*.parquet"))) == 2
    assert not (tmp_path / "samples.parquet").exists()
    ran = []
    _, resumed = evaluate_samples(model, "pgd", x, y, out=tmp_path, on_shard=ran.append, **kw)
    assert len(ran) == 4  # 6 shards, 2 kept
    _same(full, resumed)
    import pandas as pd

    _same(full, pd.read_parquet(tmp_path / "samples.parquet"))


def test_a_folder_of_another_evaluation_is_refused(task, tmp_path):
    model, x, y = task
    evaluate(model, "noise", x, y, eps=0.1, out=tmp_path, shard_size=30)
    with pytest.raises(ValueError, match=r"another evaluation \(differs in: eps\)"):
        evaluate(model, "noise", x, y, eps=0.2, out=tmp_path, shard_size=30)


def test_a_universal_v_is_fitted_once_and_applied_per_shard(task):
    model, x, y = task
    fits = []
    kw = {"eps": [0.1, 0.2], "epochs": 1, "fit_x": x, "fit_y": y}
    _, whole = evaluate_samples(model, "uap_sgd", x, y, on_result=lambda e, r: fits.append(e),
                                **kw)
    fits.clear()
    _, sharded = evaluate_samples(model, "uap_sgd", x, y, shard_size=20,
                                  on_result=lambda e, r: fits.append(e), **kw)
    assert fits == [0.1, 0.2]
    _same(whole, sharded)


def test_bad_shard_size_names_itself(task):
    model, x, y = task
    with pytest.raises(ValueError, match="shard_size must be an integer >= 1, got 0"):
        evaluate(model, "noise", x, y, eps=0.1, shard_size=0)


def test_adversarial_inputs_are_kept_when_asked(task, tmp_path):
    from robustkit.attacks.pgd import pgd
    from robustkit.tensorfiles import load_tensors

    model, x, y = task
    evaluate(model, "pgd", x, y, eps=[0.05, 0.1], shard_size=20, seed=2, steps=3,
             out=tmp_path, keep_x_adv=True)
    kept, _ = load_tensors(tmp_path, "x_adv")
    for e in (0.05, 0.1):  # per-sample draws: the shards' points are one call's points
        direct = pgd(model, x, y, eps=e, seed=2, steps=3, sample_ids=torch.arange(N))
        assert torch.equal(kept[f"eps={e:g}"], direct.x_adv)
    evaluate(model, "deepfool", x, y, eps=[0.1, 5.0], shard_size=20, max_iter=5,
             out=tmp_path / "df", keep_x_adv=True)
    df, _ = load_tensors(tmp_path / "df", "x_adv")
    assert df["eps=0.1"].shape == x.shape
    small = (df["eps=0.1"] - x).flatten(1).norm(dim=1)
    assert float(small.max()) <= 0.1 + 1e-6 and not torch.equal(df["eps=5"], x)
    with pytest.raises(ValueError, match="keep_x_adv=True needs out="):
        evaluate(model, "noise", x, y, eps=0.1, keep_x_adv=True)


def test_kept_samples_counts_what_a_rerun_skips(task, tmp_path):
    from robustkit.evaluate.samples import kept_samples

    model, x, y = task
    kw = {"eps": 0.05, "batch_size": 10, "shard_size": 10, "seed": 1, "steps": 2}
    assert kept_samples(tmp_path) == 0 and kept_samples(None) == 0

    with pytest.raises(Killed):
        evaluate(model, "pgd", x, y, out=tmp_path, on_shard=_die_after(3), **kw)
    assert kept_samples(tmp_path) == 30
    assert kept_samples(tmp_path, x_adv=True) == 0  # no adversarial inputs were kept
    ran = []
    evaluate(model, "pgd", x, y, out=tmp_path, on_shard=ran.append, **kw)
    assert sum(r.stop - r.start for r in ran) == len(x) - 30
    assert kept_samples(tmp_path) == len(x)
