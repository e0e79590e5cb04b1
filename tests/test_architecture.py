"""The package's shape: no import cycles between robustkit modules, and a light import.

The import graph counts every ``import``/``from ... import`` of a robustkit module, at the
top of a file or inside a function alike (an import inside a function still runs, so it
does not break a cycle, only hides it), and so does ``importlib.import_module`` of a
robustkit name. Importing ``a.b.c`` also runs the ``__init__`` of the packages ``a.b`` and
``a``, so those count too; a module importing a package it is part of (its own parent)
does not.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The layers, bottom first: a module imports modules of its own layer or below, never
# above (names are the top-level modules and packages of robustkit; see
# docs/architecture.md). The package's own __init__ (the public entry) is not layered.
LAYERS = (
    {"registry", "params", "progress", "tensorfiles", "dask_address", "executors"},  # foundations
    {"data"},
    {"models"},
    {"store", "importing"},
    {"attacks", "certify"},
    {"evaluate"},
    {"defenses"},
    {"report"},
    {"sweep"},
    {"cli"},
)

# Imported only where used: `import robustkit` must not pull them in.
HEAVY = ("foolbox", "dask", "matplotlib", "scipy", "onnx")


def modules(root: Path, package: str) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package) for every module under ``root/package``."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def dynamic_target(node: ast.Call) -> str | None:
    """The module an ``importlib.import_module(...)`` call names: a string constant as is;
    for an f-string its constant head followed by ``*`` (every module under that prefix,
    an over-approximation); None for any other call or argument."""
    f = node.func
    called = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
    if called != "import_module" or not node.args:
        return None
    arg = node.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        return f"{arg.values[0].value}*"
    return None


def imported_names(tree: ast.AST, package: str) -> Iterable[str]:
    """Absolute dotted names of every import in ``tree`` (``package``: the package the file
    is in, for relative imports). ``from a import b`` yields ``a.b`` (a module or not)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            target = dynamic_target(node)
            if target is not None:
                yield target
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph(root: Path, package: str = "robustkit") -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports (see the module docstring)."""
    mods = modules(root, package)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, (path, is_package) in mods.items():
        own = name if is_package else name.rpartition(".")[0]
        for target in imported_names(ast.parse(path.read_text(), str(path)), own):
            matches = ([m for m in mods if m.startswith(target[:-1])] if target.endswith("*")
                       else [target])
            for parts in (m.split(".") for m in matches):
                for i in range(1, len(parts) + 1):  # the module and every package above it
                    dep = ".".join(parts[:i])
                    if dep in mods and dep != name and not name.startswith(dep + "."):
                        graph[name].add(dep)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan), i.e. every
    set of modules that import each other in a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def describe(cycle: frozenset[str], graph: dict[str, set[str]]) -> str:
    """One line per module of ``cycle``: the modules of the cycle it imports."""
    return "\n".join(f"  {m} -> {', '.join(sorted(graph[m] & cycle))}" for m in sorted(cycle))



def test_robustkit_has_no_import_cycles():
    graph = import_graph(ROOT)
    assert "robustkit.data" in graph and "robustkit.models.registry" in graph
    bad = cycles(graph)
    assert not bad, "import cycles (function-level imports count):\n" + "\n".join(
        describe(c, graph) for c in bad)


def layer_of(module: str) -> int | None:
    """The index in ``LAYERS`` of ``robustkit.<name>...``; None for the root package."""
    parts = module.split(".")
    if len(parts) < 2:
        return None
    return next(i for i, names in enumerate(LAYERS) if parts[1] in names)


def test_every_module_has_a_layer():
    top = {m.split(".")[1] for m in modules(ROOT, "robustkit") if "." in m}
    assert top == set().union(*LAYERS)


def test_imports_point_down_the_layers():
    graph = import_graph(ROOT)
    up = sorted(f"{a} -> {b}" for a, deps in graph.items() for b in deps
                if None not in (layer_of(a), layer_of(b)) and layer_of(b) > layer_of(a))
    assert not up, "imports from a lower layer up to a higher one:\n" + "\n".join(up)


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_the_graph_sees_function_level_relative_and_dynamic_imports(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "from pkg import a\n",  # a package importing its own modules
        "pkg/a.py": "import pkg\nfrom pkg.sub.b import thing\n",  # pkg: its own parent
        "pkg/sub/__init__.py": "",
        "pkg/sub/b.py": "def f():\n    from ..c import g\n",
        "pkg/c.py": "def g():\n    from . import a\n",
        "pkg/d.py": "import importlib\ndef f(m):\n    importlib.import_module('pkg.c')\n"
                    "    importlib.import_module(f'pkg.sub.{m}')\n    importlib.import_module(m)\n",
    })
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.d"] == {"pkg.c", "pkg.sub", "pkg.sub.b"}
    assert graph["pkg.a"] == {"pkg.sub", "pkg.sub.b"}
    assert graph["pkg.sub.b"] == {"pkg.c"} and graph["pkg.c"] == {"pkg.a"}
    assert cycles(graph) == [frozenset({"pkg.a", "pkg.c", "pkg.sub.b"})]


def test_import_robustkit_stays_light():
    code = f"import sys, robustkit; print(*[m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.split()
    assert out == [], f"`import robustkit` imports {out}; import them where they are used"
