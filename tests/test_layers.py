"""The folders are the architecture: every import points down the layers, never up.

    basics  <-  testbed  <-  harness.compressors, harness.config, harness.results  <-  harness.model
            <-  harness.runtime  <-  harness.sweep  <-  reports  <-  papers  <-  pipenem (the CLI)

Plus what each layer must not know at all: the testbed knows nothing of torch, the
harness nothing of tc/netlink, reports read result tables only (no torch, no testbed), and
no module imports itself back through others (no cycle, lazy imports inside functions included).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

LAYERS = [
    ("basics",),
    ("testbed",),
    # bare `harness`: the package's (empty) __init__
    ("harness", "harness.compressors", "harness.config", "harness.results"),
    ("harness.model",),
    ("harness.runtime",),
    ("harness.sweep",),
    ("reports",),
    ("papers",),
    ("pipenem",),
]
FORBIDDEN = {
    "basics": ("torch", "pyroute2", "pydantic"),
    "testbed": ("torch",),
    "harness": ("pyroute2",),
    "reports": ("torch", "testbed", "pyroute2"),
}
TOPS = ("basics", "testbed", "harness", "reports", "papers", "pipenem")


def _layer(module: str) -> int | None:
    """The rank of the longest package prefix of ``module`` (harness.runtime.x -> harness.runtime)."""
    best = max(
        (
            (len(p), rank)
            for rank, prefixes in enumerate(LAYERS)
            for p in prefixes
            if module == p or module.startswith(p + ".")
        ),
        default=None,
    )
    return best[1] if best else None


def _modules() -> list[tuple[str, Path]]:
    out = []
    for top in TOPS:
        for f in sorted((ROOT / top).rglob("*.py")):
            rel = f.relative_to(ROOT).with_suffix("")
            out.append((".".join(p for p in rel.parts if p != "__init__"), f))
    return out


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            # `from harness import runtime` imports harness.runtime
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


@pytest.mark.parametrize("module,path", _modules(), ids=lambda v: v if isinstance(v, str) else "")
def test_imports_point_down_the_layers(module: str, path: Path) -> None:
    mine = _layer(module)
    assert mine is not None, f"{module} is in no layer: add its package to LAYERS (and the README's Layout)"
    up = []
    for line, name in _imports(path):
        theirs = _layer(name)
        if theirs is not None and theirs > mine:
            up.append(f"{path.relative_to(ROOT)}:{line} imports {name} (layer {theirs} > {mine})")
        for top, banned in FORBIDDEN.items():
            if module.split(".")[0] == top and name.split(".")[0] in banned:
                up.append(f"{path.relative_to(ROOT)}:{line} imports {name}: {top}/ must not know {name.split('.')[0]}")
    assert not up, "\n".join(up)


def _graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (the most specific module an import names;
    imports inside functions count: a lazy import is a dependency all the same)."""
    mods = dict(_modules())

    def target(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in mods.items():
        deps = {target(name) for _, name in _imports(path)}
        graph[module] = {d for d in deps if d is not None and d != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_anywhere() -> None:
    graph = _graph()
    assert len(graph) > 50 and all(graph[m] <= set(graph) for m in graph)  # the graph is the whole project
    assert not _cycles(graph), "import cycles (lazy imports included): " + "; ".join(map(" <-> ".join, _cycles(graph)))


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_readme_layout_names_every_package() -> None:
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout") :]
    packages = {m.rsplit(".", 1)[0] if p.name != "__init__.py" else m for m, p in _modules()}
    # nested packages appear indented under their parent, by their own name
    missing = [p for p in sorted(packages) if p.split(".")[-1] + "/" not in layout]
    assert not missing, f"README Layout does not mention {missing}"
