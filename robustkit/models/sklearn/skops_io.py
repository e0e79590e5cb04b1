"""Read fitted estimators from skops files, trusting only the types robustkit converts.

A skops file is a zip of ``schema.json`` (which types to build, from what) and ``.npy``
arrays; skops rebuilds objects from the schema and refuses types it was not told to trust.
Before anything is built, every type the schema names (and every type skops itself flags
as untrusted) must be in :data:`ALLOWED`: the supported estimators and pipeline steps,
their fitted helpers, and plain containers and numpy arrays. Otherwise a ``ValueError``
lists the offending types and nothing is loaded. Pickle and joblib are never used.
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

MAX_SCHEMA_BYTES = 64 * 2**20
_SK = "sklearn."
ALLOWED = frozenset({
    "builtins.dict", "builtins.list", "builtins.tuple", "builtins.str", "builtins.int",
    "builtins.float", "builtins.bool", "builtins.NoneType", "builtins.slice",
    "numpy.ndarray", "numpy.dtype", "numpy.random.mtrand.RandomState",
    "numpy.random._mt19937.MT19937",
    *(f"numpy.{t}" for t in ("float64", "float32", "int64", "int32", "bool_", "str_",
                             "uint8", "int8", "intc", "longlong")),
    *(_SK + t for t in (
        "svm._classes.SVC", "svm._classes.NuSVC", "svm._classes.LinearSVC",
        "linear_model._logistic.LogisticRegression",
        "linear_model._stochastic_gradient.SGDClassifier",
        "linear_model._perceptron.Perceptron", "linear_model._ridge.RidgeClassifier",
        "discriminant_analysis.LinearDiscriminantAnalysis",
        "discriminant_analysis.QuadraticDiscriminantAnalysis", "naive_bayes.GaussianNB",
        "neural_network._multilayer_perceptron.MLPClassifier",
        "neural_network._stochastic_optimizers.AdamOptimizer",
        "neural_network._stochastic_optimizers.SGDOptimizer",
        "multiclass.OneVsRestClassifier", "pipeline.Pipeline",
        "preprocessing._data.StandardScaler", "preprocessing._data.MinMaxScaler",
        "decomposition._pca.PCA", "preprocessing._label.LabelBinarizer")),
    # SGDClassifier / Perceptron keep their loss object (loss="log_loss": sklearn's
    # Cython binomial loss since 1.3).
    _SK + "_loss._loss.CyHalfBinomialLoss",
    *(f"{_SK}linear_model._sgd_fast.{t}" for t in (
        "Hinge", "SquaredHinge", "ModifiedHuber", "Log", "Huber", "SquaredLoss",
        "EpsilonInsensitive", "SquaredEpsilonInsensitive")),
})


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def schema_types(path: str | os.PathLike) -> set[str]:
    """Every ``module.Class`` named in a skops file's schema (nothing is built).

    Raises:
        ValueError: not a skops file (e.g. a pickle renamed ``.skops``), or no schema.
    """
    try:
        with zipfile.ZipFile(path) as z:
            info = z.getinfo("schema.json")
            if info.file_size > MAX_SCHEMA_BYTES:
                raise ValueError(f"{path}: schema.json is larger than {MAX_SCHEMA_BYTES} bytes")
            schema = json.loads(z.read(info))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a skops file (a zip with schema.json): {exc}. "
                         "Save the estimator with skops.io.dump; pickle/joblib files are "
                         "never loaded") from None
    found: set[str] = set()
    _walk(schema, found)
    return found


def _walk(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        if "__module__" in node and "__class__" in node:
            found.add(f"{node['__module__']}.{node['__class__']}")
        for v in node.values():
            _walk(v, found)
    elif isinstance(node, list):
        for v in node:
            _walk(v, found)


def load_skops(path: str | os.PathLike) -> Any:
    """Load a fitted estimator from a skops file, refusing any type outside ``ALLOWED``.

    Args:
        path: a file written by ``skops.io.dump``.

    Returns:
        The estimator.

    Raises:
        ValueError: not a skops file, or it names types outside ``ALLOWED`` (listed).

    Example:
        >>> est = load_skops("model.skops")  # doctest: +SKIP
    """
    import skops.io as sio

    path = Path(path)
    named = schema_types(path)
    try:
        flagged = set(sio.get_untrusted_types(file=path))
    except Exception as exc:  # noqa: BLE001 (any failure to parse means a malformed file)
        raise ValueError(f"{path}: malformed skops file: {exc!r}") from None
    refused = sorted((named | flagged) - ALLOWED)
    if refused:
        raise ValueError(f"{path}: refusing to load types outside the trusted list: "
                         f"{', '.join(refused)} (trusted: supported scikit-learn estimators, "
                         "their pipeline steps, containers and numpy arrays)")
    return sio.load(path, trusted=sorted(flagged))
