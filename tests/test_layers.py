"""The package's layering rules, checked over the import graph of ``sim/`` (parsed with ``ast``).

Layers, bottom to top: core < demand < perf < scenario < serving < economics < market <
forecast < study < calibration < api < cli (``sim/api.py``, the library API, sits on top of
the library; the package root reaches it only lazily, through ``importlib``, on first use).  A module imports only its own layer and those below;
nothing imports ``sim.cli``; ``sim.serving`` knows nothing of money, markets or studies;
``sim/perf/step.py`` (the step-time interface) imports nothing of the project but its
arithmetic series ``sim/perf/series.py``, which imports nothing of the project; no module
imports another in a cycle; no project import sits inside a function (those existed only to
dodge cycles).  Every failure names the file and line of the offending import.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SIM = Path(__file__).resolve().parents[1] / "sim"
LAYERS = ["core", "demand", "perf", "scenario", "serving", "economics", "market", "forecast", "study",
          "calibration", "api", "cli"]
# packages outside the layer list, placed where they belong: the package root is the facade on
# top of the library (its version from sim.core.version and the lazy hook to sim.api; nothing
# in the project imports it), the packaged scenario files are data read by the scenario layer
EXTRA_LAYER = {"sim": "api", "sim.scenarios": "scenario"}
SKIP = {"models"}


@dataclass(frozen=True)
class Import:
    src: str        # importing module, dotted
    dst: str        # imported project module, dotted
    file: str       # path relative to the repository
    line: int
    in_function: bool

    def where(self) -> str:
        return f"{self.file}:{self.line}"


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(root: Path) -> dict[str, Path]:
    out = {}
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root)
        if rel.parts[0] in SKIP or "__pycache__" in rel.parts:
            continue
        out[_module_name(p, root)] = p
    return out


class _Collector(ast.NodeVisitor):
    def __init__(self):
        self.depth = 0
        self.found: list[tuple[ast.AST, bool]] = []

    def _scope(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _scope

    def visit_Import(self, node):
        self.found.append((node, self.depth > 0))

    visit_ImportFrom = visit_Import


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module ``name`` denotes, or its longest existing prefix (``sim.x.y`` where
    ``y`` is a function of module ``sim.x``); None outside the project."""
    if name != "sim" and not name.startswith("sim."):
        return None
    parts = name.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in modules:
            return cand
        parts.pop()
    return None


def import_graph(root: Path = SIM) -> list[Import]:
    modules = _modules(root)
    repo = root.parent
    edges = []
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), filename=str(path))
        col = _Collector()
        col.visit(tree)
        for node, in_fn in col.found:
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base_parts = pkg[:len(pkg) - (node.level - 1)]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                # ``from sim.perf import catalog`` imports the submodule sim.perf.catalog
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    targets.append(sub if sub in modules else base)
            for t in targets:
                dst = _resolve(t, modules)
                if dst is not None and dst != mod:
                    edges.append(Import(mod, dst, str(path.relative_to(repo)), node.lineno, in_fn))
    return list(dict.fromkeys(edges))     # one edge per (module, target, line)


def layer_of(module: str) -> str:
    if module in EXTRA_LAYER:
        return EXTRA_LAYER[module]
    top = module.split(".")[1]
    if f"sim.{top}" in EXTRA_LAYER:
        return EXTRA_LAYER[f"sim.{top}"]
    if top not in LAYERS:
        raise AssertionError(f"module {module} is in no layer; add sim/{top} to LAYERS in tests/test_layers.py")
    return top


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


# ---- the rules, each a function of the edge list, returning one message per violation ----

def upward_arrows(edges):
    rank = {name: i for i, name in enumerate(LAYERS)}
    return [f"{e.where()}: {e.src} ({layer_of(e.src)}) imports {e.dst} ({layer_of(e.dst)}), a higher layer"
            for e in edges if rank[layer_of(e.dst)] > rank[layer_of(e.src)]]


def imports_of_cli(edges):
    return [f"{e.where()}: {e.src} imports {e.dst}; nothing outside sim.cli may import it"
            for e in edges if _in(e.dst, "sim.cli") and not _in(e.src, "sim.cli")]


def forbidden(edges, src_pkg, dst_pkgs):
    return [f"{e.where()}: {e.src} imports {e.dst}; {src_pkg} may import nothing of {', '.join(dst_pkgs)}"
            for e in edges if _in(e.src, src_pkg) and any(_in(e.dst, d) for d in dst_pkgs)]


_STEP_INTERFACE = {"sim.perf.step", "sim.perf.series"}


def step_interface_imports(edges):
    return [f"{e.where()}: {e.src} imports {e.dst}; the step interface imports nothing of the project"
            for e in edges
            if e.src in _STEP_INTERFACE and not (e.src == "sim.perf.step" and e.dst == "sim.perf.series")]


def function_level_imports(edges):
    return [f"{e.where()}: {e.src} imports {e.dst} inside a function; hoist it to the module top"
            for e in edges if e.in_function]


def cycles(edges):
    """Every strongly connected component of more than one module (Tarjan), as one message
    showing a cycle through it and the lines of its arrows."""
    graph: dict[str, dict[str, Import]] = {}
    for e in edges:
        graph.setdefault(e.src, {}).setdefault(e.dst, e)
        graph.setdefault(e.dst, {})
    index, low, on, stack, comps, counter = {}, {}, set(), [], [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(set(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    msgs = []
    for comp in comps:
        start = min(comp)
        # breadth-first path from start back to itself inside the component
        prev, frontier, seen = {}, [start], {start}
        end = None
        while frontier and end is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v]):
                    if w not in comp:
                        continue
                    if w == start:
                        end = v
                        break
                    if w not in seen:
                        seen.add(w)
                        prev[w] = v
                        nxt.append(w)
                if end is not None:
                    break
            frontier = nxt
        path = [end]
        while path[-1] != start:
            path.append(prev[path[-1]])
        path.reverse()
        path.append(start)
        hops = [f"{a} ({graph[a][b].where()})" for a, b in zip(path, path[1:])]
        msgs.append("import cycle: " + " -> ".join(hops) + f" -> {start}")
    return msgs


RULES = {
    "no arrow from a lower layer to a higher one": upward_arrows,
    "nothing imports sim.cli": imports_of_cli,
    "sim.serving knows nothing of money, markets or studies":
        lambda g: forbidden(g, "sim.serving", ["sim.economics", "sim.market", "sim.forecast", "sim.study",
                                               "sim.calibration"]),
    "sim.market imports nothing of sim.serving": lambda g: forbidden(g, "sim.market", ["sim.serving"]),
    "sim/perf/step.py imports nothing of the project but sim/perf/series.py, which imports nothing":
        step_interface_imports,
    "no import cycle": cycles,
    "no function-level project import": function_level_imports,
}


@pytest.fixture(scope="module")
def edges():
    return import_graph()


def test_graph_sees_the_package(edges):
    """The parser finds the imports it must (guards the rules below against passing vacuously)."""
    pairs = {(e.src, e.dst) for e in edges}
    assert ("sim.serving.world", "sim.serving.router") in pairs
    assert ("sim.study.run", "sim.economics.attach") in pairs
    assert ("sim.cli.perf", "sim.perf.catalog") in pairs          # from sim.perf import catalog
    assert ("sim.scenario", "sim.scenario.schema") in pairs        # a package's re-exports
    assert len(edges) > 100


@pytest.mark.parametrize("rule", list(RULES))
def test_rule(edges, rule):
    broken = RULES[rule](edges)
    assert not broken, f"{rule}:\n" + "\n".join(broken)


# ---- the checker itself catches what it must (a planted package in a temporary folder) ----

def _plant(tmp_path, files: dict[str, str]) -> Path:
    root = tmp_path / "sim"
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    for d in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        (d / "__init__.py").touch()
    return root


def test_checker_catches_planted_violations(tmp_path):
    root = _plant(tmp_path, {
        "core/a.py": "import numpy\n",
        "perf/step.py": "from sim.core import a\nfrom sim.perf import series\n",
        "perf/series.py": "from sim.perf import catalog\n",
        "perf/catalog.py": "X = 1\n",
        "serving/world.py": "from sim.perf import catalog\n\ndef f():\n    from sim.economics.ledger import L\n",
        "economics/ledger.py": "import sim.serving.world\nL = 1\n",
        "market/m.py": "from sim.serving.world import f\nfrom ..cli import app\n",
        "cli/app.py": "from sim.market import m\n",
    })
    g = import_graph(root)
    pairs = {(e.src, e.dst) for e in g}
    assert ("sim.serving.world", "sim.perf.catalog") in pairs     # submodule via from-import
    assert ("sim.market.m", "sim.cli.app") in pairs               # relative import
    up = upward_arrows(g)
    assert any("sim/serving/world.py:4" in m and "sim.economics.ledger" in m for m in up)
    assert any("sim/market/m.py:2" in m for m in up)
    assert imports_of_cli(g) == ["sim/market/m.py:2: sim.market.m imports sim.cli.app; "
                                 "nothing outside sim.cli may import it"]
    assert forbidden(g, "sim.market", ["sim.serving"])
    assert forbidden(g, "sim.serving", ["sim.economics"])
    assert sorted(step_interface_imports(g)) == ["sim/perf/series.py:1: sim.perf.series imports sim.perf.catalog; "
                                                 "the step interface imports nothing of the project",
                                                 "sim/perf/step.py:1: sim.perf.step imports sim.core.a; "
                                                 "the step interface imports nothing of the project"]
    assert function_level_imports(g) == ["sim/serving/world.py:4: sim.serving.world imports "
                                         "sim.economics.ledger inside a function; hoist it to the module top"]
    cyc = sorted(cycles(g))
    assert cyc == [
        "import cycle: sim.cli.app (sim/cli/app.py:1) -> sim.market.m (sim/market/m.py:2) -> sim.cli.app",
        "import cycle: sim.economics.ledger (sim/economics/ledger.py:1) -> "
        "sim.serving.world (sim/serving/world.py:4) -> sim.economics.ledger"]


def test_clean_planted_package_passes(tmp_path):
    root = _plant(tmp_path, {
        "core/a.py": "X = 1\n",
        "perf/step.py": "import math\n",
        "serving/world.py": "from sim.core.a import X\nimport sim.perf.step\n",
        "cli/app.py": "from sim.serving import world\n",
    })
    g = import_graph(root)
    assert len(g) == 3
    assert all(not rule(g) for rule in RULES.values())
