"""The import structure of `ltx/`: strict layers, no cycles, method homes that stay apart.

Every `import` and `from ... import` of an ltx module is read with `ast` (also those inside
functions), so a lazy import cannot hide a dependency.
"""

import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)
PACKAGE = os.path.join(ROOT, "ltx")

# Lowest first. A module may import from its own layer or below, never from above.
LAYERS = (
    ("ltx.outputs", "ltx.data", "ltx.models", "ltx.losses", "ltx.metrics", "ltx.optim",
     "ltx.checkpointing", "ltx.metric_writers", "ltx.plots", "ltx.config_lib", "ltx.convert",
     "ltx.faults", "ltx.provenance", "ltx.files", "ltx.compile_cache", "ltx.host_memory"),
    ("ltx.fusion", "ltx.evaluation", "ltx.evaluators"),
    ("ltx.methods",),
    ("ltx.config_check",),
    ("ltx.parts", "ltx.steps"),
    ("ltx.predictor",),
    ("ltx.trainer",),
    ("ltx.packed",),
    ("ltx.workdirs",),
    ("ltx.stages",),
    ("ltx.train", "ltx.report", "ltx.predict", "ltx.stats", "ltx.checkpoint_import",
     "ltx.sweep", "ltx.cli"),
)
# Modules of the lowest layer that another one of that layer may import.
FOUNDATIONS = ("ltx.outputs", "ltx.data", "ltx.models", "ltx.losses", "ltx.metrics", "ltx.files")
SHARED_METHOD_MODULES = ("ltx.methods", "ltx.methods.base")


def module_name(path: str) -> str:
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def ltx_modules() -> dict[str, str]:
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                found[module_name(path)] = path
    return found


def imports_of(path: str, modules) -> set[str]:
    """The ltx modules that the file at `path` imports (resolving `from pkg import module`),
    with the packages whose `__init__` such an import runs first (`ltx.a.b` runs `ltx.a`), but
    not the importing module's own packages, which are being imported already."""
    tree = ast.parse(open(path).read(), path)
    result = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from ltx import trainer` imports ltx.trainer; `from ltx.x import name`, ltx.x.
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                     else node.module for a in node.names]
        else:
            continue
        for name in names:
            if not name.startswith("ltx"):
                continue
            while name not in modules and "." in name:
                name = name.rsplit(".", 1)[0]
            if name in modules:
                result.add(name)
    own = module_name(path)
    for name in list(result):
        parts = name.split(".")
        for i in range(2, len(parts)):
            parent = ".".join(parts[:i])
            if parent in modules and not own.startswith(parent + "."):
                result.add(parent)
    return result


def import_graph(modules) -> dict[str, set[str]]:
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def layer_of(name: str) -> tuple[int, str]:
    for index, layer in enumerate(LAYERS):
        for prefix in layer:
            if name == prefix or name.startswith(prefix + "."):
                return index, prefix
    raise AssertionError(f"{name} is in no layer of tests/test_layers.py; add it to LAYERS")


def violations(graph) -> list[str]:
    """Every import against the layer order or between two method homes."""
    found = []
    for source, targets in sorted(graph.items()):
        if source == "ltx":
            continue
        s_layer, s_group = layer_of(source)
        for target in sorted(targets):
            if target == "ltx":
                found.append(f"{source} imports the package root ltx")
                continue
            t_layer, t_group = layer_of(target)
            if t_layer > s_layer:
                found.append(f"{source} (layer {s_layer}) imports {target} (layer {t_layer})")
            elif (t_layer == s_layer == 0 and t_group != s_group
                  and t_group not in FOUNDATIONS):
                found.append(f"{source} imports {target}, a sibling of its layer")
            elif (s_group == t_group == "ltx.methods"
                  and target not in SHARED_METHOD_MODULES):
                home = lambda m: m.split(".")[2] if m.count(".") >= 2 else None  # noqa: E731
                if source not in SHARED_METHOD_MODULES and home(source) != home(target):
                    found.append(f"{source} imports {target}, another method's home")
    return found


def cycles(graph) -> list[list[str]]:
    """The import cycles of the graph (each as a path that returns to its start)."""
    found, state, stack = [], {}, []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_ltx_has_no_import_cycle():
    assert cycles(import_graph(ltx_modules())) == []


def test_every_import_follows_the_layer_order():
    assert violations(import_graph(ltx_modules())) == []


@pytest.mark.parametrize("source,target,expected", [
    ("ltx.losses.margin", "ltx.trainer", "(layer 0) imports ltx.trainer (layer 6)"),
    ("ltx.methods.ride", "ltx.methods.balpoe", "another method's home"),
    ("ltx.trainer", "ltx.stages", "(layer 6) imports ltx.stages (layer 9)"),
    ("ltx.optim", "ltx.plots", "a sibling of its layer"),
])
def test_an_added_import_against_the_order_is_caught(source, target, expected):
    graph = import_graph(ltx_modules())
    graph[source] = graph[source] | {target}
    assert any(expected in v and v.startswith(source) for v in violations(graph))


@pytest.mark.parametrize("source", ["ltx.models", "ltx.losses.margin"])
def test_an_added_cycle_is_caught(source):
    """Also through a package's __init__: trainer -> methods -> ... -> ltx.losses -> margin."""
    graph = import_graph(ltx_modules())
    graph[source] = graph[source] | {"ltx.trainer"}
    assert any(source in c and "ltx.trainer" in c for c in cycles(graph))
