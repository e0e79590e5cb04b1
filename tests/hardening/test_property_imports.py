"""Property-based tests of the import paths (issue 21): random valid scikit-learn estimators
and pipelines round-trip exactly or are refused with one line; random byte edits of skops,
ONNX and safetensors files, and schema edits naming code to run, never run it, never end
in a traceback and never leave a half-written model (nor damage the one stored before)."""
from __future__ import annotations

import io
import json
import sys
import textwrap
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from torch import nn

from robustkit import load_dataset, store
from robustkit.cli import main
from robustkit.importing import import_sklearn

sio = pytest.importorskip("skops.io")  # the byom extra, part of the test install
SETTINGS = {"derandomize": True, "deadline": None,
            "suppress_health_check": [HealthCheck.too_slow,
                                      HealthCheck.function_scoped_fixture]}


@pytest.fixture(scope="module")
def digits_np():
    tr = load_dataset("digits", "train", seed=0, limit=300)
    te = load_dataset("digits", "test", seed=0)
    flat = (lambda d: d.x.reshape(len(d.x), -1).double().numpy())
    return flat(tr), tr.y.numpy(), flat(te)


def _head(draw):
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import (
        LogisticRegression,
        Perceptron,
        RidgeClassifier,
        SGDClassifier,
    )
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import SVC, LinearSVC

    kind = draw(st.sampled_from(["svc", "linsvc", "logreg", "sgd", "perceptron", "ridge",
                                 "lda", "nb", "mlp"]))
    c = draw(st.sampled_from([0.01, 0.3, 1.0, 10.0]))
    if kind == "svc":
        return SVC(kernel=draw(st.sampled_from(["linear", "rbf", "poly", "sigmoid"])), C=c,
                   gamma=draw(st.sampled_from(["scale", 0.01, 0.1])),
                   degree=draw(st.integers(2, 3)))
    return {"linsvc": lambda: LinearSVC(C=c), "logreg": lambda: LogisticRegression(C=c),
            "sgd": lambda: SGDClassifier(loss=draw(st.sampled_from(["hinge", "log_loss",
                                                                      "modified_huber"])),
                                         alpha=c / 100, random_state=0),
            "perceptron": lambda: Perceptron(random_state=0),
            "ridge": lambda: RidgeClassifier(alpha=c), "lda": LinearDiscriminantAnalysis,
            "nb": GaussianNB,
            "mlp": lambda: MLPClassifier((draw(st.integers(2, 12)),), max_iter=30,
                                         activation=draw(st.sampled_from(["relu", "tanh",
                                                                          "logistic"])),
                                         random_state=0)}[kind]()


@st.composite
def estimators(draw):
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    steps = draw(st.lists(st.sampled_from(["std", "minmax", "pca"]), max_size=2, unique=True))
    pre = [{"std": StandardScaler, "minmax": MinMaxScaler,
            "pca": lambda: PCA(draw(st.integers(2, 30)))}[s]() for s in steps]
    head = _head(draw)
    return make_pipeline(*pre, head) if pre else head


@pytest.mark.slow
@settings(max_examples=20, **SETTINGS)
@given(est=estimators())
def test_random_estimators_round_trip_exactly_or_are_refused(est, digits_np, tmp_path_factory):
    x, y, x_test = digits_np
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence of a few iterations is not the point
        est.fit(x, y)
    folder = tmp_path_factory.mktemp("est")
    sio.dump(est, folder / "e.skops")
    try:
        rec = import_sklearn(folder / "e.skops", name="m", dataset="digits",
                             workdir=folder / "ws")
    except (ValueError, TypeError) as exc:
        assert str(exc) and "\n" not in str(exc)
        assert not (folder / "ws" / "m").exists()
        event(f"refused: {str(exc)[:60]}")
        return
    event("stored")
    module, meta = store.load(rec.path)
    with torch.no_grad():
        got = module(torch.from_numpy(x_test).reshape(-1, 1, 8, 8)).argmax(1).numpy()
    assert np.array_equal(got, est.predict(x_test))
    assert meta.extra["estimator"] == type(est).__name__


# Random byte edits and what must hold whatever the outcome.

def _edits():
    op = st.tuples(st.sampled_from(["set", "delete", "insert"]), st.floats(0, 1),
                   st.binary(min_size=1, max_size=8))
    return st.lists(op, min_size=1, max_size=4)


def _apply(data: bytes, ops, head: int | None = None) -> bytes:
    b = bytearray(data)
    for kind, where, blob in ops:
        i = int(where * (min(len(b), head) if head else len(b) - 1))
        if kind == "set":
            b[i] = blob[0]
        elif kind == "delete":
            del b[i:i + len(blob) * 2]
        else:
            b[i:i] = blob
    return bytes(b)


def _check_outcome(res, ws: Path, name: str, before: bytes | None) -> None:
    """Exit 0 with a loadable model, or exit 1 with one line and nothing written."""
    assert isinstance(res.exception, SystemExit) or res.exception is None, res.exception
    assert res.exit_code in (0, 1), res.output
    assert "Traceback" not in res.output
    if res.exit_code == 1:
        assert len(res.output.strip().splitlines()) == 1, res.output
        assert res.output.startswith("error: ")
        json_file = ws / name / "model.json"
        if before is None:
            assert not (ws / name).exists() or not any((ws / name).iterdir())
        else:  # a --force import that failed left the old model as it was
            assert json_file.read_bytes() == before
            store.load(ws / name)
    else:
        store.load(ws / name)


@pytest.fixture(scope="module")
def sources(tmp_path_factory, digits_np):
    """A valid skops file, ONNX graph and safetensors weights (+ builder) to edit."""
    from sklearn.linear_model import LogisticRegression

    folder = tmp_path_factory.mktemp("sources")
    x, y, _ = digits_np
    sio.dump(LogisticRegression(max_iter=200).fit(x, y), folder / "e.skops")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation
        torch.onnx.export(net.eval(), (torch.rand(2, 1, 8, 8),), buf, input_names=["x"],
                          dynamic_axes={"x": {0: "n"}}, dynamo=False)
    (folder / "g.onnx").write_bytes(buf.getvalue())
    (folder / "propnets.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def net():
            torch.manual_seed(0)
            return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(),
                                 nn.Linear(16, 10))
    """))
    save_file(net.state_dict(), folder / "w.safetensors")
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    sys.modules.pop("propnets", None)


def _import_args(kind: str, src: Path, path: Path) -> list[str]:
    return {"sklearn": ["sklearn", str(path)], "onnx": ["onnx", str(path)],
            "torch": ["torch", "propnets:net", str(path)]}[kind]


@pytest.mark.slow
@settings(max_examples=36, **SETTINGS)
@given(kind=st.sampled_from(["sklearn", "onnx", "torch"]), ops=_edits(),
       in_header=st.booleans(), replace=st.booleans())
def test_byte_edits_never_crash_or_leave_half_a_model(sources, tmp_path_factory, kind, ops,
                                                      in_header, replace):
    src = sources / {"sklearn": "e.skops", "onnx": "g.onnx", "torch": "w.safetensors"}[kind]
    folder = tmp_path_factory.mktemp("edit")
    edited = folder / src.name
    edited.write_bytes(_apply(src.read_bytes(), ops, head=200 if in_header else None))
    ws, before = folder / "ws", None
    if replace:  # a model stored before, which a failed --force import must not damage
        ok = CliRunner().invoke(main, ["import", *_import_args(kind, sources, src), "--name",
                                       "m", "--dataset", "digits", "--workdir", str(ws)])
        assert ok.exit_code == 0, ok.output
        before = (ws / "m" / "model.json").read_bytes()
    res = CliRunner().invoke(main, ["import", *_import_args(kind, sources, edited), "--name",
                                    "m", "--dataset", "digits", "--workdir", str(ws),
                                    *(["--force"] if replace else [])])
    _check_outcome(res, ws, "m", before)
    event(f"{kind}: exit {res.exit_code}")


DANGEROUS = [("builtins", "eval"), ("os", "system"), ("subprocess", "Popen"),
             ("propbomb", "Boom"), ("numpy", "load"), ("sklearn.utils", "Bunch")]


@settings(max_examples=30, **SETTINGS)
@given(target=st.sampled_from(DANGEROUS), which=st.floats(0, 1))
def test_schema_edits_naming_code_never_run_it(sources, tmp_path_factory, target, which):
    """A skops file re-zipped (valid CRCs) after one type of its schema was replaced by a
    callable or a module whose import leaves a sentinel file: refused, nothing ran."""
    folder = tmp_path_factory.mktemp("schema")
    sentinel = folder / "ran"
    (folder / "propbomb.py").write_text(f"open({str(sentinel)!r}, 'w').close()\n"
                                        f"class Boom:\n    pass\n")
    sys.path.insert(0, str(folder))
    try:
        with zipfile.ZipFile(sources / "e.skops") as z:
            files = {n: z.read(n) for n in z.namelist()}
        schema = json.loads(files["schema.json"])
        nodes = list(_typed_nodes(schema))
        node = nodes[int(which * (len(nodes) - 1))]
        node["__module__"], node["__class__"] = target
        files["schema.json"] = json.dumps(schema).encode()
        path = folder / "evil.skops"
        with zipfile.ZipFile(path, "w") as z:
            for n, data in files.items():
                z.writestr(n, data)
        res = CliRunner().invoke(main, ["import", "sklearn", str(path), "--name", "m",
                                        "--dataset", "digits", "--workdir", str(folder / "ws")])
    finally:
        sys.path.remove(str(folder))
    assert not sentinel.exists() and "propbomb" not in sys.modules
    _check_outcome(res, folder / "ws", "m", None)
    assert res.exit_code == 1 and ".".join(target) in res.output


def _typed_nodes(node):
    if isinstance(node, dict):
        if "__module__" in node and "__class__" in node:
            yield node
        for v in node.values():
            yield from _typed_nodes(v)
    elif isinstance(node, list):
        for v in node:
            yield from _typed_nodes(v)
