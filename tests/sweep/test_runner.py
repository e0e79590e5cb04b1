"""The runner: same rows whatever the executor, models trained once, failures recorded."""
from __future__ import annotations

import json

import pytest
import torch
from _fixtures import auc_by_pairs, tpr_at_fpr

from robustkit.sweep import TIMING_COLUMNS, expand, load_spec, read_rows, run_sweep
from robustkit.sweep.results import eps_key


def comparable(path):
    rows = read_rows(path)
    keys = [(r["cell_id"], r["eps"]) for r in rows]
    assert len(keys) == len(set(keys)), "duplicate rows"
    return sorted(({k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows),
                  key=lambda r: (r["cell_id"], r["eps"]))


def expected_keys(spec):
    return {(c.cell_id, eps_key(e)) for c in expand([spec]) for e in c.eps}


def test_serial_processes_and_dask_give_the_same_rows(tmp_path, tiny_spec):
    distributed = pytest.importorskip("distributed")
    spec = load_spec(tiny_spec())
    serial = run_sweep([spec], tmp_path / "serial", threads=1, report=False)
    assert (serial.cells, serial.run, serial.errors, serial.models_trained) == (4, 4, 0, 2)
    procs = run_sweep([spec], tmp_path / "procs", workers=2, threads=1, report=False)
    assert procs.executor == "processes" and procs.models_trained == 2
    threads = torch.get_num_threads()
    try:
        with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                      dashboard_address=":0") as cluster:
            # by address, as `robustkit sweep --dask ADDRESS` does
            on_dask = run_sweep([spec], tmp_path / "dask", dask=cluster.scheduler_address,
                                threads=1, report=False)
    finally:
        torch.set_num_threads(threads)
    assert on_dask.executor == "dask" and on_dask.run == 4
    rows = comparable(tmp_path / "serial" / "results.csv")
    assert {(r["cell_id"], r["eps"]) for r in rows} == expected_keys(spec)
    assert all(r["status"] == "ok" for r in rows)
    assert rows == comparable(tmp_path / "procs" / "results.csv")
    # PGD cells run last (their masking flags need the FGSM rows), whatever the executor
    methods = [r["attack_method"] for r in read_rows(tmp_path / "procs" / "results.csv")]
    assert methods == ["fgsm"] * 4 + ["pgd"] * 4
    assert all("masking_flags" in r for r in rows)
    assert rows == comparable(tmp_path / "dask" / "results.csv")
    fgsm = [r for r in rows if r["attack"] == "fgsm" and r["eps"] == "0.1"]
    assert all(float(r["robust_accuracy"]) < float(r["clean_accuracy"]) for r in fgsm)


def test_rerun_skips_finished_cells_and_trains_nothing(tmp_path, tiny_spec):
    spec = load_spec(tiny_spec())
    first = run_sweep([spec], tmp_path / "out", threads=1, report=False)
    before = (tmp_path / "out" / "results.csv").read_bytes()
    again = run_sweep([spec], tmp_path / "out", threads=1, report=False)
    assert (again.run, again.skipped, again.models_trained) == (0, first.cells, 0)
    assert (tmp_path / "out" / "results.csv").read_bytes() == before
    # one more eps: only the new rows run, on the stored models
    bigger = load_spec(tiny_spec('\n[[attacks]]\nattack = "noise"\n', name="more.toml"))
    third = run_sweep([bigger], tmp_path / "out", threads=1, report=False)
    assert (third.run, third.models_trained, third.stale) == (2, 0, 0)
    fewer = run_sweep([spec], tmp_path / "out", threads=1, report=False)
    assert (fewer.run, fewer.stale) == (0, 4)  # the noise rows are not in this spec
    assert len(comparable(tmp_path / "out" / "results.csv")) == 12
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert len(run["runs"]) == 4 and run["runs"][2]["cells"]["run"] == 2
    assert run["specs"][0]["text"].startswith("\n[sweep]") and "torch" in run["versions"]


def test_failing_cell_is_recorded_and_the_sweep_goes_on(tmp_path, tiny_spec):
    # a value validation cannot see (the model's class count): fails when the cell runs
    path = tiny_spec('\n[[attacks]]\nname = "broken"\nattack = "uap_sgd"\n'
                     'params = { target = 50 }\n')
    spec = load_spec(path)
    summary = run_sweep([spec], tmp_path / "out", threads=1, report=False)
    assert summary.errors == 2 and summary.run == 6
    rows = read_rows(tmp_path / "out" / "results.csv")
    bad = [r for r in rows if r["attack"] == "broken"]
    assert len(bad) == 4 and all(r["status"] == "error" for r in bad)
    assert "target" in bad[0]["error"] and "ValueError" in bad[0]["error"]
    assert all(r["status"] == "ok" for r in rows if r["attack"] != "broken")
    retry = run_sweep([spec], tmp_path / "out", threads=1, report=False, retry_errors=True)
    assert (retry.run, retry.errors) == (2, 2)
    assert len(comparable(tmp_path / "out" / "results.csv")) == 12


def test_failing_training_marks_its_cells_and_the_rest_runs(tmp_path, tiny_spec):
    # pca beyond the data's 64 features: a problem only the data shows, at training time
    spec = load_spec(tiny_spec('\n[[models]]\nname = "bad"\nfamily = "gmm"\n'
                               'params = { pca = 1000 }\n'))
    summary = run_sweep([spec], tmp_path / "out", threads=1, report=False)
    rows = read_rows(tmp_path / "out" / "results.csv")
    bad = [r for r in rows if r["model"] == "bad"]
    assert len(bad) == 4 and all(r["status"] == "error" for r in bad)
    assert bad[0]["error"].startswith("training failed: ValueError: gmm: pca=1000")
    assert len(summary.model_errors) == 1 and summary.errors == 2
    assert sum(r["status"] == "ok" for r in rows) == 8


def test_artifacts_and_report(tmp_path, tiny_spec):
    spec = load_spec(tiny_spec('\n[[attacks]]\nattack = "uap_sgd"\neps = [0.2]\n'))
    summary = run_sweep([spec], tmp_path / "out", threads=1)
    from safetensors import safe_open

    found = sorted((tmp_path / "out" / "artifacts" / "deepfool" / "digits").glob("*.safetensors"))
    assert [p.name.split("__")[0] for p in found] == ["linear", "mlp-16"]
    xs = []
    for p in found:
        with safe_open(str(p), framework="pt") as f:
            assert f.metadata()["dataset"] == "digits"
            xs.append(f.get_tensor("x"))
            assert f.get_tensor("delta").shape == xs[-1].shape == (3, 1, 8, 8)
    assert torch.equal(xs[0], xs[1])  # the same inputs for every model
    uaps = list((tmp_path / "out" / "artifacts" / "uap" / "digits").glob("*.safetensors"))
    assert len(uaps) == 2
    assert summary.report_error is None
    assert summary.report and summary.report.endswith("index.html")


DETECTOR = """
[[defenses]]
name = "none"

[[defenses]]
name = "det"
defense = "detector"
params = { eps = 0.3, n_uaps = 1, n_synthetic = 2, epochs = 2 }
models = ["mlp-16"]

[[attacks]]
name = "pgd-3"
attack = "pgd"
params = { steps = 3 }
adaptive = true
"""


def test_detector_rows_are_scored_as_a_system(tmp_path, tiny_spec):
    spec = load_spec(tiny_spec(DETECTOR))
    summary = run_sweep([spec], tmp_path / "out", threads=1, report=False)
    assert summary.errors == 0, read_rows(tmp_path / "out" / "results.csv")
    rows = [r for r in read_rows(tmp_path / "out" / "results.csv") if r["defense"] == "det"]
    assert sorted({(r["attack"], r["adaptive"]) for r in rows}) == [
        ("fgsm", "false"), ("pgd-3", "false"), ("pgd-3", "true")]
    for r in rows:
        assert r["clean_system_accuracy"] != "" and r["model_key"] != ""
    (fgsm,) = [r for r in rows if r["attack"] == "fgsm" and float(r["eps"]) == 0.1]
    _check_system_row(fgsm, tmp_path / "out" / "models" / fgsm["model_key"])
    assert (tmp_path / "out" / "models" / rows[0]["model_key"] / "detector.json").is_file()
    rocs = list((tmp_path / "out" / "artifacts" / "roc" / "digits").glob("*.json"))
    assert len(rocs) == len(rows)
    doc = json.loads(rocs[0].read_text())
    assert doc["defense"] == "det" and len(doc["fpr"]) == len(doc["tpr"]) > 2
    # the undefended rows of the same model carry no system columns
    plain = [r for r in read_rows(tmp_path / "out" / "results.csv") if r["defense"] == "none"]
    assert plain and all(r["system_accuracy"] == "" for r in plain)


def _check_system_row(row, folder):
    """A sweep's system row, recomputed from the stored model and detector on the cell's
    inputs (digits test, limit 60, seed 0): AUC by counting score pairs, TPR at 5% FPR by
    thresholding every score, the rates and accuracies from the system's own decisions."""
    from robustkit import load_dataset, store
    from robustkit.defenses.detection import attack_system
    from robustkit.defenses.system import load_system, system_accuracy

    model, _ = store.load(folder)
    system = load_system(folder, model)
    te = load_dataset("digits", "test", seed=0, limit=60)
    x, y = te.x, te.y
    x_adv, _ = attack_system(system, "fgsm", 0.1, x, y, adaptive=False, fit_x=x, fit_y=y)
    with torch.no_grad():
        clean, adv = system.score(x), system.score(x_adv)
        dec, clean_dec = system.decide(x_adv), system.decide(x)
        flagged, flagged_clean = system.detector.flag(x_adv), system.detector.flag(x)
    want = {"detection_auc": auc_by_pairs(clean, adv), "tpr_at_5fpr": tpr_at_fpr(clean, adv),
            "system_accuracy": system_accuracy(dec, y, adversarial=True),
            "clean_system_accuracy": system_accuracy(clean_dec, y, adversarial=False),
            "rejection_rate": float(flagged.double().mean()),  # no rectifier
            "flagged_rate": float(flagged.double().mean()),
            "fpr_at_threshold": float(flagged_clean.double().mean())}
    fields = {**row, **json.loads(row["extra"])}
    got = {k: float(fields[k]) for k in want}
    assert got == pytest.approx(want, abs=1e-7)
