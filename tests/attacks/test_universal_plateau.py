"""uap's plateau stop (``patience``/``min_gain``), the same stop in ``uap_stream``, and the
import graph of the universal modules (no cycle)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from robustkit import attacks
from robustkit.attacks.universal import uap
from robustkit.attacks.universal_common import plateaued
from robustkit.attacks.universal_stream import uap_stream

ON_MLP = pytest.mark.parametrize("family", ["mlp"])
ATTACKS = Path(__file__).resolve().parents[2] / "robustkit" / "attacks"


def test_plateaued_compares_the_rate_patience_passes_back():
    assert not plateaued([0.0, 0.1, 0.1], 3, 0.005)  # too few passes to tell
    assert plateaued([0.0, 0.1, 0.1, 0.1, 0.1], 3, 0.005)
    assert not plateaued([0.0, 0.1, 0.1, 0.1, 0.106], 3, 0.005)  # 0.6 points in 3 passes
    assert plateaued([0.0, 0.1, 0.102, 0.104, 0.105], 3, 0.005)  # 0.5 points: at most
    assert plateaued([0.3, 0.3], 1, 0.0) and not plateaued([0.3, 0.31], 1, 0.0)
    assert not plateaued([0.0] * 20, None, 0.005)


@ON_MLP
@pytest.mark.parametrize("patience", [1, 2, 3])
def test_a_constant_fooling_rate_stops_after_patience_passes(model, digits_train, patience):
    # xi 1e-4 is far too small to change a prediction: every pass leaves the rate at 0.
    x, y = digits_train.x[:64], digits_train.y[:64]
    res = uap(model, x, y, xi=1e-4, max_passes=10, patience=patience, seed=1)
    assert res.passes == len(res.history) == patience
    assert res.plateau and not res.converged
    assert [h["fooling_rate"] for h in res.history] == [0.0] * patience
    assert float(res.v.abs().max()) > 0  # DeepFool steps were folded in: v did move
    free = uap(model, x, y, xi=1e-4, max_passes=5, patience=None, seed=1)
    assert free.passes == 5 and not free.plateau


@ON_MLP
def test_registry_info_records_passes_and_the_plateau(model, digits_train, digits_test):
    fx, fy = digits_train.x[:64], digits_train.y[:64]
    res = attacks.get("uap").fn(model, digits_test.x[:20], digits_test.y[:20], eps=1e-4,
                                fit_x=fx, fit_y=fy, patience=2)
    assert res.info["passes"] == res.info["uap"].passes == 2 and res.info["plateau"] is True


@ON_MLP
def test_the_stop_only_truncates_the_passes(model, digits_train):
    """Stopped after k passes, v is the v of a run of exactly k passes without the stop,
    and the stop fired at the first pass where the last ``patience`` passes gained at
    most ``min_gain``."""
    x, y = digits_train.x[:400], digits_train.y[:400]
    res = uap(model, x, y, xi=0.1, delta=0.0, max_passes=10, patience=1, min_gain=0.01)
    assert res.plateau and 1 <= res.passes < 10
    rates = [0.0] + [h["fooling_rate"] for h in res.history]
    assert [plateaued(rates[:i + 1], 1, 0.01) for i in range(1, len(rates))] == (
        [False] * (res.passes - 1) + [True])
    ref = uap(model, x, y, xi=0.1, delta=0.0, max_passes=res.passes, patience=None)
    assert torch.equal(res.v, ref.v) and res.fooling_rate == ref.fooling_rate
    assert not ref.plateau


@ON_MLP
def test_same_result_as_before_where_1_minus_delta_is_reached(model, digits_train):
    x, y = digits_train.x[:400], digits_train.y[:400]
    res = uap(model, x, y, xi=0.3)
    old = uap(model, x, y, xi=0.3, patience=None)  # the fit without the plateau stop
    assert res.converged and not res.plateau
    assert torch.equal(res.v, old.v) and res.passes == old.passes
    assert res.fooling_rate == old.fooling_rate >= 0.8


@ON_MLP
def test_uap_stream_stops_on_the_same_plateau(model, digits_train):
    x, y = digits_train.x[:96], digits_train.y[:96]
    stream = [(x[:48], y[:48]), (x[48:], y[48:])]
    for patience in (1, 2):
        got = uap_stream(model, stream, xi=1e-4, batch_size=16, patience=patience)
        assert got.passes == patience and got.plateau and not got.converged
        assert [h["fooling_rate"] for h in got.history] == [0.0] * patience
    free = uap_stream(model, stream, xi=1e-4, batch_size=16, max_passes=4, patience=None)
    assert free.passes == 4 and not free.plateau


@ON_MLP
def test_bad_plateau_arguments_raise_naming_the_parameter(model, digits_train):
    x, y = digits_train.x[:20], digits_train.y[:20]
    for kw, word in (({"patience": 0}, "patience"), ({"patience": True}, "patience"),
                     ({"patience": 1.5}, "patience"), ({"min_gain": -0.1}, "min_gain"),
                     ({"min_gain": 1.5}, "min_gain"), ({"min_gain": "0"}, "min_gain")):
        with pytest.raises(ValueError, match=word):
            uap(model, x, y, xi=0.1, **kw)
        with pytest.raises(ValueError, match=word):
            uap_stream(model, [(x, y)], xi=0.1, **kw)
    rules = attacks.get("uap").rules
    assert rules["patience"](None) is None and rules["patience"](2) is None
    assert rules["patience"](0) is not None and rules["min_gain"](2.0) is not None


def _imports(path: Path) -> set[str]:
    """The robustkit.attacks.universal* modules a file imports (at any level)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        found |= {n.rsplit(".", 1)[-1] for n in names
                  if n.startswith("robustkit.attacks.universal")}
    return found


def test_universal_modules_import_each_other_without_a_cycle():
    graph = {p.stem: _imports(p) for p in ATTACKS.glob("universal*.py")}
    assert {"universal", "universal_sgd", "universal_common"} <= set(graph)
    assert "universal" not in graph["universal_sgd"]
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(mod: str, path: tuple[str, ...]) -> None:
        assert seen.get(mod) != 1, f"import cycle: {' -> '.join((*path, mod))}"
        if seen.get(mod) == 2:
            return
        seen[mod] = 1
        for dep in sorted(graph.get(mod, ())):
            visit(dep, (*path, mod))
        seen[mod] = 2

    for mod in sorted(graph):
        visit(mod, ())


@pytest.mark.parametrize("first", ["universal_sgd", "universal_common", "universal_stream"])
def test_each_universal_module_imports_first_in_a_fresh_interpreter(first):
    code = (f"import robustkit.attacks.{first}; from robustkit.attacks import names; "
            "print(sorted(n for n in names() if n.startswith('uap')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == str(["uap", "uap_l2", "uap_sgd", "uap_sgd_l2"])
