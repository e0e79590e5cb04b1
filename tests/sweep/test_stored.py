"""Sweep specs naming a stored model (``stored = "NAME"``): an imported scikit-learn pipeline
is evaluated by name, exactly as a direct attack on it, and keyed by its content."""
from __future__ import annotations

import json
import math

import pytest
from _specs import FGSM as FGSM_ENTRY
from _specs import PGD3, spec_text
from click.testing import CliRunner

from robustkit import attacks, load_dataset, store
from robustkit.cli import main
from robustkit.evaluate import evaluate
from robustkit.sweep import SpecError, expand, parse_spec, read_rows, run_sweep, validate
from robustkit.sweep.jobdata import Context
from robustkit.sweep.stored import resolved
from robustkit.sweep.tasks import cell_task

sio = pytest.importorskip("skops.io")

CHEAP = spec_text(attacks=[FGSM_ENTRY, PGD3, {"name": "aa-fast", "attack": "autoattack",
                                                "params": {"version": "fast", "steps": 3}}])
FGSM = spec_text(attacks=[{**FGSM_ENTRY, "eps": [0.1]}])


def _spec(tmp_path, *, stored="svc", dataset="digits", gallery=0, attacks=CHEAP,
          extra_model="", extra="", name="s.toml"):
    model = {"name": "svc-pipeline", "stored": stored}
    text = spec_text(sweep={"name": "stored", "eps": [0.0, 0.1], "gallery": gallery},
                     datasets=[{"name": dataset, "test_limit": 40}], models=[model])
    path = tmp_path / name
    path.write_text(text + extra_model + "\n" + attacks + extra)
    return path


def _import(tmp_path, ws, *, components: int, c: float):
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    tr = load_dataset("digits", "train", seed=0)
    x, y = tr.x.reshape(len(tr.x), -1).double().numpy(), tr.y.numpy()
    est = make_pipeline(StandardScaler(), PCA(components), SVC(kernel="rbf", C=c)).fit(x, y)
    path = tmp_path / f"svc-{components}-{c}.skops"
    sio.dump(est, path)
    res = CliRunner().invoke(main, ["import", "sklearn", str(path), "--name", "svc",
                                    "--dataset", "digits", "--workdir", str(ws), "--force"])
    assert res.exit_code == 0, res.output


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace holding the imported pipeline ``svc`` (never modified by the tests)."""
    root = tmp_path_factory.mktemp("ws")
    _import(root, root / "ws", components=20, c=1.0)
    return root / "ws"


def _direct(ws, attack: str, eps: list[float], **params):
    model, _ = store.load(store.find_model(ws, "svc"))
    te = load_dataset("digits", "test", seed=0, limit=40)
    return evaluate(model, attacks.get(attack), te.x, te.y, eps=eps, seed=0, device="cpu",
                    **params)


def test_stored_model_rows_equal_direct_attacks(ws, tmp_path):
    summary = run_sweep([parse_spec(_spec(tmp_path, gallery=2).read_text(), "s.toml")],
                        tmp_path / "out", workers=0, report=False, workdir=ws,
                        models_dir=tmp_path / "models")
    assert (summary.run, summary.errors, summary.models_trained) == (3, 0, 0)
    assert not any((tmp_path / "models").iterdir())  # nothing trained, nothing stored
    rows = read_rows(tmp_path / "out" / "results.csv")
    assert len(rows) == 6 and {r["status"] for r in rows} == {"ok"}
    assert {r["model"] for r in rows} == {"svc-pipeline"}
    assert {r["family"] for r in rows} == {"sklearn"}
    assert all('"stored": "svc"' in r["model_params"] for r in rows)
    for attack, name, params in (("fgsm", "fgsm", {}), ("pgd", "pgd-3", {"steps": 3}),
                                 ("autoattack", "aa-fast", {"version": "fast", "steps": 3})):
        want = _direct(ws, attack, [0.0, 0.1], **params)
        got = sorted((r for r in rows if r["attack"] == name), key=lambda r: float(r["eps"]))
        assert [float(r["robust_accuracy"]) for r in got] == \
            [w["robust_accuracy"] for w in want]
        assert float(got[0]["clean_accuracy"]) == want[0]["clean_accuracy"] > 0.9
    # the attacks bite: the 0.1 row is below the clean one
    assert float(got[1]["robust_accuracy"]) < float(got[0]["robust_accuracy"])
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["stored_models"]["svc"]["path"] == str(store.find_model(ws, "svc").resolve())
    # the DeepFool gallery is drawn on the stored model too
    assert list((tmp_path / "out" / "artifacts" / "deepfool").rglob("*.safetensors"))


def test_dry_run_reports_unknown_name_and_dataset_mismatch(ws, tmp_path):
    runner = CliRunner()
    ghost = _spec(tmp_path, stored="ghost", name="ghost.toml")
    res = runner.invoke(main, ["sweep", "--dry-run", "--workdir", str(ws), str(ghost)])
    assert res.exit_code == 2, res.output
    assert f"{ghost}: models[0].stored: no model 'ghost' in {ws}; available: svc" in res.output
    moons = _spec(tmp_path, dataset="moons", name="moons.toml")
    res = runner.invoke(main, ["sweep", "--dry-run", "--workdir", str(ws), str(moons)])
    assert res.exit_code == 2, res.output
    assert (f"{moons}: models[0].stored: model 'svc' was stored for dataset 'digits' "
            f"(input [1, 8, 8]); it cannot run on 'moons' (input [2])") in res.output
    ok = _spec(tmp_path, name="ok.toml")
    res = runner.invoke(main, ["sweep", "--dry-run", "--workdir", str(ws), str(ok)])
    assert res.exit_code == 0, res.output
    assert "digits/svc-pipeline/none/aa-fast/seed0" in res.output
    assert "3 cells, 6 rows, 1 models" in res.output


def test_spec_problems_of_stored_entries(ws, tmp_path):
    both = _spec(tmp_path, extra_model='family = "svm"', name="both.toml")
    with pytest.raises(SpecError, match=r"models\[0\]: family cannot go with stored = 'svc'"):
        parse_spec(both.read_text(), "both.toml")
    retrain = _spec(tmp_path, extra='\n[[defenses]]\ndefense = "none"\nname = "none"\n'
                    '[[defenses]]\ndefense = "retrain"\nname = "rt"\nparams = { eps = 0.1 }\n'
                    'models = ["svc-pipeline"]\n', name="rt.toml")
    with pytest.raises(SpecError) as err:
        validate([parse_spec(retrain.read_text(), "rt.toml")], workdir=ws)
    assert any("defenses[1].models: 'rt' (retrain) must retrain 'svc-pipeline', an imported "
               "sklearn model: robustkit cannot retrain imported models" in p
               for p in err.value.problems)
    unresolved = parse_spec(_spec(tmp_path, name="u.toml").read_text(), "u.toml")
    with pytest.raises(ValueError, match="not resolved"):
        expand([unresolved])


def test_reimport_under_the_same_name_recomputes(tmp_path):
    ws = tmp_path / "ws"
    _import(tmp_path, ws, components=20, c=1.0)
    spec = parse_spec(_spec(tmp_path, attacks=FGSM).read_text(), "s.toml")
    out, kw = tmp_path / "out", {"workers": 0, "report": False, "workdir": ws,
                                 "models_dir": tmp_path / "models"}
    first = run_sweep([spec], out, **kw)
    assert (first.run, first.skipped) == (1, 0)
    again = run_sweep([spec], out, **kw)
    assert (again.run, again.skipped) == (0, 1)
    (old_cell,) = expand(resolved([spec], ws))
    _import(tmp_path, ws, components=10, c=0.3)  # another model, the same name
    new = run_sweep([spec], out, **kw)
    assert (new.run, new.skipped, new.stale, new.errors) == (1, 0, 1, 0)
    rows = read_rows(out / "results.csv")
    assert len({r["cell_id"] for r in rows}) == 2
    latest = [r for r in rows if r["cell_id"] != old_cell.cell_id]
    want = _direct(ws, "fgsm", [0.1])[0]["robust_accuracy"]
    assert float(latest[0]["robust_accuracy"]) == want
    # a cell keyed by the old model refuses to evaluate the new one
    res = cell_task(old_cell, (0.1,), Context(str(tmp_path / "models")))
    assert res["rows"][0]["status"] == "error"
    assert "was replaced after the sweep started" in res["rows"][0]["error"]
    assert not math.isnan(want)
