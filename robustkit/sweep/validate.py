"""Check parsed specs against the registries and the data root before anything runs.

Every problem is collected (file, key, what is valid) and raised together as one
:class:`SpecError`, so a user fixes a spec in one pass and no cell starts on a bad grid.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from robustkit.params import integer, problems
from robustkit.sweep.certify_spec import certify_problems
from robustkit.sweep.spec import NO_DEFENSE, AttackEntry, DefenseEntry, Spec, SpecError

if TYPE_CHECKING:
    from robustkit.attacks import AttackSpec

# Arguments the runner passes itself; a spec may not set them in ``params``.
RUNNER_ARGS = ("eps", "seed", "fit_x", "fit_y", "x", "y", "model", "device", "on_result")
EVALUATE_ARGS = ("batch_size",)
# Parameters ``detection_scores`` takes per system attack (uap_sgd: all of its own).
SYSTEM_PARAMS = {"fgsm": ("norm",), "pgd": ("norm", "steps"), "noise": ("norm",),
                 "autoattack": ("norm", "version", "steps", "targets", "queries")}


def validate(specs: Iterable[Spec], *, data_root: str | os.PathLike | None = None,
             data: bool = True, workdir: str | os.PathLike = "runs") -> None:
    """Raise :class:`SpecError` listing every problem of ``specs``; return None if all is well.

    Checks: dataset names and that their files are present under the data root; model
    families and their parameters; defense names, parameters and model families; attack
    names, parameters and eps ranges; that ``models``/``datasets``/``defenses`` filters
    name entries of the same spec. ``data=False`` skips the check that the data files
    are present (``--dry-run`` lists a grid before its data is there; see
    :func:`data_problems`). Models named by ``stored`` must be in ``workdir``, load, and
    have been stored for the datasets they run on (:mod:`robustkit.sweep.stored`).

    Example:
        >>> from robustkit.sweep.spec import parse_spec
        >>> spec = parse_spec('[[datasets]]\\nname="digits"\\n[[models]]\\nfamily="linear"\\n'
        ...                   '[[attacks]]\\nattack="nope"')
        >>> try:
        ...     validate([spec])
        ... except SpecError as e:
        ...     print(e.problems[0][:41])
        <spec>: attacks[0].attack: unknown attack
    """
    from robustkit.sweep.stored import resolve

    specs, problems = resolve(specs, workdir)
    for spec in specs:
        problems += _datasets(spec, data_root, files=data)
        problems += _models(spec)
        problems += _defenses(spec)
        problems += _attacks(spec)
        problems += certify_problems(
            spec.path, spec.certify, {m.name: m.certify for m in spec.models},
            {a.name for a in spec.attacks}, [d.name for d in spec.datasets if d.stream])
    if problems:
        raise SpecError(problems)


def data_problems(specs: Iterable[Spec], *, data_root: str | os.PathLike | None = None
                  ) -> list[str]:
    """What :func:`validate` says about the datasets of ``specs``: names, missing files."""
    return [p for spec in specs for p in _datasets(spec, data_root)]


def _datasets(spec: Spec, data_root: Any, *, files: bool = True) -> list[str]:
    from robustkit import data as datasets

    out = []
    for i, ds in enumerate(spec.datasets):
        where = f"{spec.path}: datasets[{i}].name"
        try:
            datasets.check_name(ds.name)
        except ValueError as exc:
            out.append(f"{where}: {exc}")
            continue
        if not files:
            continue
        describe = getattr(datasets, "describe", None)
        if describe is not None:
            card = describe(ds.name, data_root)
            if card.get("available", True):
                continue
            if card.get("location"):
                out.append(f"{where}: dataset {ds.name!r} is missing: expected its files in "
                           f"{card['location']} (give another --data-root or "
                           f"${datasets.DATA_ENV})")
            else:
                out.append(f"{where}: dataset {ds.name!r} needs a data root: pass --data-root "
                           f"DIR or set ${datasets.DATA_ENV} (it is never downloaded)")
            continue
        try:
            datasets.load_dataset(ds.name, "test", root=data_root, limit=10)
        except (OSError, ValueError) as exc:
            out.append(f"{where}: dataset {ds.name!r} cannot be loaded: {exc}")
    return out


def _models(spec: Spec) -> list[str]:
    from robustkit import models

    out = []
    declared = {d.name for d in spec.datasets}
    for i, m in enumerate(spec.models):
        where = f"{spec.path}: models[{i}]"
        if m.stored is not None:
            pass  # checked by robustkit.sweep.stored
        elif m.family not in models.names():
            out.append(f"{where}.family: unknown model {m.family!r}; valid: "
                       f"{', '.join(models.names())}")
        else:
            out += [f"{where}.params: {p}" for p in models.check_params(m.family, m.params)]
        out += _filter(where + ".datasets", m.datasets, declared, "datasets")
    return out


def _defenses(spec: Spec) -> list[str]:
    from robustkit import defenses

    out = []
    model_names = {m.name: m.family for m in spec.models if m.stored is None}
    for i, d in enumerate(spec.defenses):
        where = f"{spec.path}: defenses[{i}]"
        out += _filter(where + ".models", d.models, {m.name for m in spec.models}, "models")
        if d.defense == NO_DEFENSE:
            if d.params:
                out.append(f"{where}.params: defense 'none' takes no parameters")
            continue
        valid = defenses.names()
        if d.defense not in valid:
            out.append(f"{where}.defense: unknown defense {d.defense!r}; valid: "
                       f"{', '.join([NO_DEFENSE] + valid)}")
            continue
        out += _defense_params(where, d, defenses.get(d.defense), model_names)
    return out


def _defense_params(where: str, d: DefenseEntry, entry: Any,
                    model_names: Mapping[str, str]) -> list[str]:
    from robustkit.defenses.base import check_eps

    out = []
    params = dict(d.params)
    try:
        check_eps(params.pop("eps", None))
    except ValueError as exc:
        out.append(f"{where}.params.eps: {exc} (the budget the defense trains against)")
    targets = d.models if d.models is not None else tuple(model_names)
    checked = False
    for name in targets:
        family = model_names.get(name)
        if family is None:
            continue
        if d.models is None and entry.families is not None and family not in entry.families:
            continue  # without an explicit list, the defense skips families it cannot take
        checked = True
        # one line per problem: value problems repeat for every model the defense takes
        out += [m for m in (f"{where}: {p}" for p in entry.problems(family, params))
                if m not in out]
    if not checked:
        out += [f"{where}: {p}" for p in entry.problems(None, params)]
        out.append(f"{where}.defense: {d.defense!r} applies to none of this spec's models; "
                   f"it takes families {', '.join(entry.families or ())}")
    return out


def _attacks(spec: Spec) -> list[str]:
    from robustkit import attacks

    out = []
    models_declared = {m.name for m in spec.models}
    defenses_declared = {d.name for d in spec.defenses}
    valid = attacks.names()
    for i, a in enumerate(spec.attacks):
        where = f"{spec.path}: attacks[{i}]"
        out += _filter(where + ".models", a.models, models_declared, "models")
        out += _filter(where + ".defenses", a.defenses, defenses_declared, "defenses")
        if not a.attack.startswith("foolbox:") and a.attack not in valid:
            out.append(f"{where}.attack: unknown attack {a.attack!r}; valid: "
                       f"{', '.join(valid)}, foolbox:<AttackName>")
            continue
        try:
            entry = attacks.get(a.attack)
        except (ImportError, ValueError) as exc:
            out.append(f"{where}.attack: {exc}")
            continue
        out += _attack_params(where, a, entry)
        out += _system_attack(where, a, spec)
        if entry.norm == "linf":
            bad = [e for e in a.eps if e > 1]
            if bad:
                out.append(f"{where}.eps: {bad} exceed 1, the largest Linf distance between "
                           f"inputs in [0, 1]; valid: 0 <= eps <= 1")
    return out


def _system_attack(where: str, a: AttackEntry, spec: Spec) -> list[str]:
    """Adaptive attacks need a wrapper defense; wrapper defenses take only system attacks."""
    from robustkit.sweep.cells import SYSTEM_ATTACKS, is_wrapper

    adaptive_ok = [n for n in SYSTEM_ATTACKS if n != "noise"]
    wrappers = [d.name for d in spec.defenses if is_wrapper(d)]
    named = [d for d in spec.defenses if a.defenses is not None and d.name in a.defenses]
    out = []
    if a.adaptive and a.attack not in adaptive_ok:
        out.append(f"{where}.adaptive: no adaptive version of {a.attack!r}; valid: "
                   f"{', '.join(adaptive_ok)}")
    elif a.adaptive and not wrappers:
        out.append(f"{where}.adaptive: adaptive attacks run against detector-like defenses "
                   f"(kind 'wrapper'); this spec has none")
    hits = [d for d in spec.defenses if is_wrapper(d)
            and (a.defenses is None or d.name in a.defenses)]
    extra = sorted(set(a.params) - set(SYSTEM_PARAMS.get(a.attack, a.params)))
    if hits and a.attack in SYSTEM_ATTACKS and extra:
        out.append(f"{where}.params: {extra} cannot be used when scoring "
                   f"{', '.join(repr(d.name) for d in hits)} as a system; valid: "
                   f"{', '.join(SYSTEM_PARAMS[a.attack])} (restrict this attack with "
                   f"`defenses = [...]` and add a second one for the detector)")
    for d in named:
        if is_wrapper(d) and a.attack not in SYSTEM_ATTACKS:
            out.append(f"{where}.defenses: {d.name!r} ({d.defense}) is scored as a system by "
                       f"{', '.join(SYSTEM_ATTACKS)} only, not {a.attack!r}")
        elif a.adaptive and not is_wrapper(d):
            out.append(f"{where}.defenses: {d.name!r} ({d.defense}) wraps no model; an "
                       f"adaptive attack needs a detector-like defense")
    return out


def _attack_params(where: str, a: AttackEntry, entry: AttackSpec) -> list[str]:
    named = entry.parameters()
    valid = None if named is None else [n for n in named if n not in RUNNER_ARGS] + list(
        EVALUATE_ARGS)
    out = []
    for key in a.params:
        if key in RUNNER_ARGS:
            out.append(f"{where}.params.{key}: set by the sweep (use the attack's eps list "
                       f"and [sweep].seeds), not a parameter")
        elif valid is not None and key not in valid:
            out.append(f"{where}.params.{key}: unknown parameter of attack {a.attack!r}; "
                       f"valid: {', '.join(sorted(valid))}")
    values = {k: v for k, v in a.params.items() if k not in RUNNER_ARGS and k in entry.rules}
    out += [f"{where}.params: {p}" for p in entry.check(values)]
    if "batch_size" in a.params and "batch_size" not in entry.rules:
        out += [f"{where}.params: {p}" for p in problems(
            {"batch_size": a.params["batch_size"]}, {"batch_size": integer(1)})]
    return out


def _filter(where: str, names: tuple[str, ...] | None, declared: set[str],
            kind: str) -> list[str]:
    if names is None:
        return []
    return [f"{where}: {n!r} is not one of this spec's {kind}; valid: "
            f"{', '.join(sorted(declared))}" for n in names if n not in declared]
