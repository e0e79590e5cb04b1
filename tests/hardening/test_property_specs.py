"""Property-based tests of sweep-spec validation (issue 12): random edits of the shipped
specs (attacks/*.toml, defenses/*.toml) either validate, and then every model, defense and
attack accepts its parameters, or fail validation with a SpecError whose every problem
names the file and the key; never another exception."""
from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robustkit import attacks, defenses, models
from robustkit.sweep.spec import NO_DEFENSE, SpecError, parse_spec, tomllib
from robustkit.sweep.validate import RUNNER_ARGS, validate

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "attacks").glob("*.toml")) + sorted((ROOT / "defenses").glob("*.toml"))
KINDS = ("models", "attacks", "defenses", "datasets")


def _value(v) -> str:
    """A TOML literal (the shipped specs only use these types)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) \
            else repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON escapes are TOML basic-string escapes
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(e) for e in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_value(e)}" for k, e in v.items()) + " }"
    raise TypeError(type(v))


def dump(doc: dict) -> str:
    lines = []
    for key, table in doc.items():
        if isinstance(table, dict):
            lines.append(f"[{key}]")
            lines += [f"{json.dumps(k)} = {_value(v)}" for k, v in table.items()]
        elif isinstance(table, list) and all(isinstance(t, dict) for t in table):
            for t in table:
                lines.append(f"[[{key}]]")
                lines += [f"{json.dumps(k)} = {_value(v)}" for k, v in t.items()]
        else:
            lines.insert(0, f"{json.dumps(key)} = {_value(table)}")
    return "\n".join(lines) + "\n"


values = st.one_of(
    st.integers(-3, 300), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.text(max_size=4), st.lists(st.integers(-2, 64), max_size=3),
    st.sampled_from(["scale", "auto", "ce", "margin", "linf", "l2", "fgsm", "relu"]))
keys = st.one_of(
    st.sampled_from(["epochs", "lr", "steps", "gamma", "C", "hidden", "channels", "eps",
                     "restarts", "loss", "norm", "batch_size", "max_passes", "seed", "alpha",
                     "watch_size", "mix", "rounds", "kernel", "pca", "test_limit"]),
    st.text(min_size=1, max_size=4))


@st.composite
def edited(draw):
    path = draw(st.sampled_from(SPECS))
    doc = tomllib.loads(path.read_text())
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(KINDS + ("sweep",)))
        op = draw(st.sampled_from(["param", "param", "drop_param", "field", "drop_field"]))
        if kind == "sweep":
            table = doc.setdefault("sweep", {})
        else:
            rows = doc.get(kind) or [{}]
            table = rows[draw(st.integers(0, len(rows) - 1))]
        if op in ("param", "drop_param") and kind in ("models", "attacks", "defenses"):
            params = table.setdefault("params", {})
            if not isinstance(params, dict):  # an earlier edit replaced the table
                continue
            if op == "param":
                params[draw(keys)] = draw(values)
            elif params:
                params.pop(draw(st.sampled_from(sorted(params))))
        elif op == "field":
            table[draw(st.sampled_from(sorted(table) or ["name"]))] = draw(values)
        elif table:
            table.pop(draw(st.sampled_from(sorted(table))))
    return path.name, dump(doc)


def _accepted_everywhere(spec) -> None:
    """A validated spec: nothing that validation passed is refused when the cells run."""
    for m in spec.models:
        models.create(m.family, **m.params)
    families = {m.name: m.family for m in spec.models}
    for d in spec.defenses:
        if d.defense == NO_DEFENSE:
            continue
        entry = defenses.get(d.defense)
        params = {k: v for k, v in d.params.items() if k != "eps"}
        assert entry.problems(None, params) == []
        for name in d.models or ():
            entry.check(families[name], params)
    for a in spec.attacks:
        entry = attacks.get(a.attack)
        params = {k: v for k, v in a.params.items() if k != "batch_size"}
        assert entry.check(params) == []
        sig = inspect.signature(entry.fn)
        sig.bind_partial(None, None, None, eps=0.1, seed=0, **params)
        assert not set(params) & set(RUNNER_ARGS)


@settings(derandomize=True, max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=edited())
def test_spec_edits_validate_or_fail_clearly(case):
    name, text = case
    try:
        spec = parse_spec(text, name)
        validate([spec], data_root=ROOT / "no-such-data-root")
    except SpecError as exc:
        assert exc.problems
        for p in exc.problems:
            assert p.startswith(f"{name}: ") and len(p) > len(name) + 10, p
        return
    _accepted_everywhere(spec)


@pytest.mark.parametrize("path", [p for p in SPECS if "mnist" not in p.name],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_shipped_digits_specs_validate_after_a_round_trip(path):
    doc = tomllib.loads(path.read_text())
    assert tomllib.loads(dump(doc)) == doc
    spec = parse_spec(dump(doc), path.name)
    validate([spec])
    _accepted_everywhere(spec)
