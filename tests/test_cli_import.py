"""``robustkit import sklearn|torch``: round trips through the store, and files that must be
refused without running anything."""
from __future__ import annotations

import json
import os
import pickle
import sys
import textwrap

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from robustkit import load_dataset, store
from robustkit.cli import main

sio = pytest.importorskip("skops.io")


def _run(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def digits_flat():
    tr = load_dataset("digits", "train", seed=0)
    return tr.x.reshape(len(tr.x), -1).double().numpy(), tr.y.numpy()


def test_sklearn_pipeline_import_then_pgd_attack(tmp_path, digits_flat):
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    x, y = digits_flat
    est = make_pipeline(StandardScaler(), PCA(20), SVC(kernel="rbf")).fit(x, y)
    path = tmp_path / "svc.skops"
    sio.dump(est, path)
    ws = tmp_path / "ws"
    res = _run("import", "sklearn", str(path), "--name", "svc", "--dataset", "digits",
               "--workdir", str(ws), "--json")
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)
    assert rec["kind"] == "sklearn" and rec["check_value"] == 0.0
    meta = store.read_model_meta(ws / "svc")
    assert meta.family == "sklearn" and meta.extra["sha256"] == rec["sha256"]
    assert meta.extra["sklearn_version"] and meta.arch["head"]["kernel"] == "rbf"
    te = load_dataset("digits", "test", seed=0)
    module, _ = store.load(ws / "svc")
    ours = module(te.x.double()).argmax(1).numpy()
    assert (ours == est.predict(te.x.reshape(len(te.x), -1).double().numpy())).all()
    res = _run("attack", "--model", "svc", "--attack", "pgd", "--eps", "0.1", "--limit", "40",
               "--param", "steps=5", "--workdir", str(ws), "--device", "cpu", "--json")
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout)[0]
    assert row["robust_accuracy"] < row["clean_accuracy"]


def test_sklearn_import_checks_the_feature_count(tmp_path, digits_flat):
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    x, y = digits_flat
    path = tmp_path / "lr.skops"
    sio.dump(LinearDiscriminantAnalysis().fit(x[:, :10], y), path)
    res = _run("import", "sklearn", str(path), "--name", "lr", "--dataset", "digits",
               "--workdir", str(tmp_path / "ws"))
    assert res.exit_code == 1 and "10 features" in res.output
    assert not (tmp_path / "ws" / "lr").exists()


class Sentinel:
    """Pickling this writes a file when unpickled: proof that nothing was unpickled."""

    path = ""

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_malicious_skops_file_is_refused_without_running_anything(tmp_path, digits_flat,
                                                                    monkeypatch):
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    # A class whose module import and __setstate__ would both leave a sentinel file.
    sentinel = tmp_path / "pwned"
    (tmp_path / "evilmod.py").write_text("class Boom:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import evilmod

    x, y = digits_flat
    est = LinearDiscriminantAnalysis().fit(x, y)
    est.hook = eval
    est.other = os.system
    est.boom = evilmod.Boom()
    path = tmp_path / "evil.skops"
    sio.dump(est, path)
    del sys.modules["evilmod"]
    (tmp_path / "evilmod.py").write_text(textwrap.dedent(f"""
        open({str(sentinel)!r}, "w").close()

        class Boom:
            def __setstate__(self, state):
                open({str(sentinel)!r}, "w").close()
    """))
    res = _run("import", "sklearn", str(path), "--name", "evil", "--dataset", "digits",
               "--workdir", str(tmp_path / "ws"))
    assert res.exit_code == 1
    assert "builtins.eval" in res.output and "system" in res.output
    assert "evilmod.Boom" in res.output
    assert not sentinel.exists() and "evilmod" not in sys.modules
    assert not (tmp_path / "ws" / "evil").exists()


def test_pickle_renamed_skops_is_refused_and_never_unpickled(tmp_path):
    sentinel = tmp_path / "pwned"
    obj = Sentinel()
    obj.path = str(sentinel)
    path = tmp_path / "model.skops"
    path.write_bytes(pickle.dumps(obj))
    res = _run("import", "sklearn", str(path), "--name", "p", "--dataset", "digits",
               "--workdir", str(tmp_path / "ws"))
    assert res.exit_code == 1 and "not a skops file" in res.output
    assert not sentinel.exists()


def test_unsupported_estimator_in_skops_is_refused(tmp_path, digits_flat):
    from sklearn.neighbors import KNeighborsClassifier

    x, y = digits_flat
    path = tmp_path / "knn.skops"
    sio.dump(KNeighborsClassifier(3).fit(x, y), path)
    res = _run("import", "sklearn", str(path), "--name", "knn", "--dataset", "digits",
               "--workdir", str(tmp_path / "ws"))
    assert res.exit_code == 1 and "KNeighborsClassifier" in res.output


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    """A module of 'research code' on sys.path that builds a small CNN."""
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(textwrap.dedent("""
        from torch import nn

        def small_cnn():
            return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(4 * 8 * 8, 10))

        def not_a_module():
            return 42
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "userpkg.nets"
    for name in [m for m in sys.modules if m.startswith("userpkg")]:
        del sys.modules[name]


def test_torch_builder_import_round_trip_and_attack(tmp_path, user_package):
    from userpkg.nets import small_cnn

    torch.manual_seed(0)
    net = small_cnn()
    weights = tmp_path / "w.safetensors"
    save_file(net.state_dict(), weights)
    ws = tmp_path / "ws"
    res = _run("import", "torch", f"{user_package}:small_cnn", str(weights), "--name", "cnn",
               "--dataset", "digits", "--workdir", str(ws))
    assert res.exit_code == 0, res.output
    module, meta = store.load(ws / "cnn")
    assert meta.family == "torch" and meta.arch["builder"] == f"{user_package}:small_cnn"
    x = load_dataset("digits", "test", seed=0).x[:16]
    torch.testing.assert_close(module(x), net(x))
    res = _run("attack", "--model", "cnn", "--attack", "fgsm", "--eps", "0.1", "--limit", "30",
               "--workdir", str(ws), "--device", "cpu", "--json")
    assert res.exit_code == 0, res.output


def test_torch_import_rejects_mismatched_weights_and_non_modules(tmp_path, user_package):
    from torch import nn

    weights = tmp_path / "w.safetensors"
    save_file(nn.Linear(64, 10).state_dict(), weights)
    res = _run("import", "torch", f"{user_package}:small_cnn", str(weights), "--name", "a",
               "--dataset", "digits", "--workdir", str(tmp_path / "ws"))
    assert res.exit_code == 1 and "does not match" in res.output
    res = _run("import", "torch", f"{user_package}:not_a_module", str(weights), "--name", "b",
               "--dataset", "digits", "--workdir", str(tmp_path / "ws"))
    assert res.exit_code == 1 and "not an nn.Module" in res.output
