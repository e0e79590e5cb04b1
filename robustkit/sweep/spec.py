"""Sweep specs: TOML files describing a grid, parsed into frozen dataclasses.

A spec names a grid ``datasets x models x defenses x attacks x eps x seeds``::

    [sweep]
    name = "digits-attacks"     # default output folder: reports/<name>
    seeds = [0]
    eps = [0.0, 0.1, 0.2]       # default eps grid of every attack
    gallery = 8                 # test inputs kept for the report's galleries

    [[datasets]]
    name = "digits"
    test_limit = 200            # test samples attacked (stratified subset)

    [[models]]
    name = "quadratic"          # display name (unique)
    family = "svm"
    params = { kernel = "poly", degree = 2 }

    [[attacks]]
    name = "pgd-10"             # display name; ``attack`` defaults to it
    attack = "pgd"
    params = { steps = 10 }

    [[defenses]]                # optional; default: one entry, defense = "none"
    name = "mlp-detector"
    defense = "detector"
    params = { eps = 0.3 }      # the budget the defense trains against
    models = ["mlp"]            # default: every model of a family the defense takes

Keys: ``[sweep]`` name, description, seeds, eps, gallery; ``[[datasets]]`` name,
train_limit (training subset), test_limit (attacked subset), fit_limit (training samples
universal perturbations are fitted on), stream (evaluate it in batches of batch_size,
default 1024, reading image folders lazily: memory bounded by the batch, not the data;
training still loads the train split); ``[[models]]`` name, family, params, datasets (the
dataset names it runs on), or instead of family and params ``stored``: the name of a model
in the workspace (``robustkit train``, ``defend``, ``import``; the sweep's ``--workdir``),
evaluated as stored, never trained; ``[[defenses]]`` name, defense (``"none"`` or a registry name),
params (with ``eps``), models; ``[[attacks]]`` name, attack, params, eps (overrides the
sweep's grid; the radius xi for universal attacks, an L2 budget for L2 attacks), models,
defenses (names it runs on), adaptive. Once ``[[defenses]]`` are given, list ``defense =
"none"`` among them to keep the undefended models. ``[certify]`` (and a model's own
``certify = {...}``): method, time_limit, params, attacks, models: which cells also certify
their inputs (:mod:`robustkit.sweep.certify_spec`).

An attack with ``adaptive = true`` knows the defense: it runs only against defenses that
wrap a model (detector, prn), as the adaptive attacks of ``robustkit.defenses.adaptive``
and ``robustkit.defenses.adaptive_autoattack``;
every other attack against a detector system attacks the bare classifier and is scored on
the whole system. White-box attacks on adversarially trained models are adaptive already.

Parsing checks the shape of the file only; :func:`robustkit.sweep.validate` checks the
names, parameters and data against the registries. Both report every problem at once in
a :class:`SpecError` naming the file and the key.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustkit.sweep.certify_spec import parse_certify
from robustkit.sweep.spec_values import (
    Keys,
    check_keys,
    check_sweep_name,
    check_unique,
    eps_values,
    freeze,
    name_list,
    seed_values,
    table_rows,
)

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as the tomli package
    import tomli as tomllib  # type: ignore[no-redef]

NO_DEFENSE = "none"
SWEEP_KEYS: Keys = {"name": str, "description": str, "seeds": list, "eps": list, "gallery": int}
DATASET_KEYS: Keys = {"name": str, "train_limit": int, "test_limit": int, "fit_limit": int,
                      "stream": bool, "batch_size": int, "shard": int}
MODEL_KEYS: Keys = {"name": str, "family": str, "params": dict, "datasets": list,
                    "stored": str, "certify": dict}
DEFENSE_KEYS: Keys = {"name": str, "defense": str, "params": dict, "models": list}
ATTACK_KEYS: Keys = {"name": str, "attack": str, "params": dict, "eps": list, "models": list,
                    "defenses": list, "adaptive": bool}
REQUIRED: dict[str, tuple[str, ...]] = {"datasets": ("name",), "models": ("family", "stored"), "defenses": ("defense", "name"),
            "attacks": ("attack", "name")}
TABLES: dict[str, Keys] = {"sweep": SWEEP_KEYS, "datasets": DATASET_KEYS, "models": MODEL_KEYS,
          "defenses": DEFENSE_KEYS, "attacks": ATTACK_KEYS, "certify": {}}


class SpecError(ValueError):
    """One or more problems in sweep specs; ``problems`` lists them as ``file: key: text``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        n = len(self.problems)
        head = f"{n} problem{'s' if n != 1 else ''} in sweep spec; nothing was run"
        super().__init__("\n".join([head] + [f"  - {p}" for p in self.problems]))


@dataclass(frozen=True)
class DatasetEntry:
    """A dataset of the grid and how much of it a sweep uses (None: all)."""

    name: str
    train_limit: int | None = None
    test_limit: int | None = None
    fit_limit: int | None = None
    stream: bool = False
    batch_size: int | None = None
    shard: int | None = None  # test samples per shard task of a cell (None: whole cells)


@dataclass(frozen=True)
class ModelEntry:
    """A model of the grid: display name, registry family, family parameters."""

    name: str
    family: str
    params: Mapping[str, Any] = field(default_factory=dict)
    datasets: tuple[str, ...] | None = None
    stored: str | None = None  # a workspace model's name: evaluated, never trained
    source: StoredModel | None = None  # what ``stored`` names (``sweep.stored.resolve``)
    certify: Mapping[str, Any] | None = None  # this model's certificate (sweep.certify_spec)


@dataclass(frozen=True)
class StoredModel:
    """A workspace model a spec names with ``stored``, as found when the sweep starts."""

    path: str  # its folder (absolute)
    content: str  # hash of its tensor file's SHA-256 and its arch: the model's identity
    family: str
    dataset: str | None
    input_shape: tuple[int, ...] | None
    imported: bool  # made elsewhere (robustkit import): robustkit cannot retrain it


@dataclass(frozen=True)
class DefenseEntry:
    """A defense of the grid (``defense="none"``: the undefended model)."""

    name: str
    defense: str
    params: Mapping[str, Any] = field(default_factory=dict)
    models: tuple[str, ...] | None = None


@dataclass(frozen=True)
class AttackEntry:
    """An attack of the grid with its eps grid (the radius xi for universal attacks)."""

    name: str
    attack: str
    params: Mapping[str, Any] = field(default_factory=dict)
    eps: tuple[float, ...] = ()
    models: tuple[str, ...] | None = None
    defenses: tuple[str, ...] | None = None
    adaptive: bool = False


@dataclass(frozen=True)
class Spec:
    """One parsed spec file."""

    path: str
    text: str
    name: str
    seeds: tuple[int, ...]
    datasets: tuple[DatasetEntry, ...]
    models: tuple[ModelEntry, ...]
    defenses: tuple[DefenseEntry, ...]
    attacks: tuple[AttackEntry, ...]
    gallery: int = 8
    description: str = ""
    certify: Mapping[str, Any] | None = None  # the spec-wide ``[certify]`` table


def load_spec(path: str | Path) -> Spec:
    """Read and parse one TOML spec file.

    Args:
        path: a ``.toml`` sweep spec.

    Returns:
        The parsed ``Spec`` (names not yet checked against the registries).

    Raises:
        SpecError: the file is missing, is not TOML, or has unknown keys or bad values.

    Example:
        >>> spec = load_spec("attacks/digits.toml")  # doctest: +SKIP
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError([f"{p}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise SpecError([f"{p}: not a TOML spec (not UTF-8 text)"]) from None
    return parse_spec(text, str(p))


def parse_spec(text: str, path: str = "<spec>") -> Spec:
    """Parse spec ``text`` (``path`` only names it in messages); see :func:`load_spec`."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError([f"{path}: not valid TOML: {exc}"]) from None
    problems: list[str] = []
    for key in sorted(set(doc) - set(TABLES)):
        problems.append(f"{path}: {key}: unknown top-level key; valid: {', '.join(TABLES)}")
    sweep = doc.get("sweep", {})
    if not isinstance(sweep, dict):
        problems.append(f"{path}: sweep: must be a table [sweep]")
        sweep = {}
    check_keys(sweep, SWEEP_KEYS, f"{path}: sweep", problems)
    seeds = tuple(seed_values(sweep.get("seeds", [0]), f"{path}: sweep.seeds", problems))
    eps = tuple(eps_values(sweep.get("eps", [0.0]), f"{path}: sweep.eps", problems))
    if isinstance(sweep.get("name"), str):
        check_sweep_name(sweep["name"], f"{path}: sweep.name", problems)
    gallery = sweep.get("gallery", 8)
    if isinstance(gallery, int) and not 0 <= gallery <= 64:
        problems.append(f"{path}: sweep.gallery: {gallery} is not in 0..64")
    tables = {k: table_rows(doc, k, path, problems) for k in ("datasets", "models", "attacks")}
    tables["defenses"] = table_rows(doc, "defenses", path, problems, required=False)
    for kind, rows in tables.items():
        for i, row in enumerate(rows):
            check_keys(row, TABLES[kind], f"{path}: {kind}[{i}]", problems)
            if not any(k in row for k in REQUIRED[kind]):
                problems.append(f"{path}: {kind}[{i}]: missing key "
                                f"{' or '.join(REQUIRED[kind])}")
    datasets = tuple(DatasetEntry(r.get("name", "?"), r.get("train_limit"), r.get("test_limit"),
                                  r.get("fit_limit"), r.get("stream", False) is True,
                                  r.get("batch_size"), r.get("shard"))
                     for r in tables["datasets"])
    for i, r in enumerate(tables["datasets"]):
        if isinstance(r.get("shard"), int) and r["shard"] < 1:
            problems.append(f"{path}: datasets[{i}].shard: {r['shard']} is not >= 1")
    models = tuple(_model(r, f"{path}: models[{i}]", problems)
                   for i, r in enumerate(tables["models"]))
    defenses = tuple(DefenseEntry(r.get("name", r.get("defense", "?")),
                                  r.get("defense", r.get("name", "?")),
                                  freeze(r.get("params", {})), name_list(r.get("models")))
                     for r in tables["defenses"]) or (DefenseEntry(NO_DEFENSE, NO_DEFENSE),)
    attacks = []
    for i, r in enumerate(tables["attacks"]):
        a_eps = tuple(eps_values(r["eps"], f"{path}: attacks[{i}].eps", problems)) if "eps" in r \
            else eps
        attacks.append(AttackEntry(r.get("name", r.get("attack", "?")),
                                   r.get("attack", r.get("name", "?")),
                                   freeze(r.get("params", {})), a_eps, name_list(r.get("models")),
                                   name_list(r.get("defenses")), r.get("adaptive", False) is True))
    for kind, entries in (("datasets", datasets), ("models", models), ("defenses", defenses)):
        check_unique(kind, [e.name for e in entries], path, problems)
    # An attack and its adaptive version share a name (the report shows "pgd (adaptive)").
    check_unique("attacks", [f"{a.name}{' (adaptive)' if a.adaptive else ''}"
                              for a in attacks], path, problems)
    certify = parse_certify(doc.get("certify"), f"{path}: certify", problems, spec_wide=True)
    if problems:
        raise SpecError(problems)
    name = sweep.get("name") or Path(path).stem
    return Spec(path, text, name, seeds, datasets, models, defenses, tuple(attacks),
                gallery, sweep.get("description", ""), certify)


def _model(r: dict[str, Any], where: str, problems: list[str]) -> ModelEntry:
    cert = parse_certify(r.get("certify"), f"{where}.certify", problems, spec_wide=False)
    stored = r.get("stored")
    if isinstance(stored, str):
        both = [k for k in ("family", "params") if k in r]
        if both:
            problems.append(f"{where}: {' and '.join(both)} cannot go with stored = "
                            f"{stored!r} (a stored model is evaluated as it is, never trained)")
        return ModelEntry(r.get("name", stored), "?", {}, name_list(r.get("datasets")), stored,
                          certify=cert)
    return ModelEntry(r.get("name", r.get("family", "?")), r.get("family", "?"),
                      freeze(r.get("params", {})), name_list(r.get("datasets")), certify=cert)
