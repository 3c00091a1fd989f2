"""The folders are the architecture: every import points down the layers, never up.

    testbed  <-  harness.compressors, harness.results  <-  harness.runtime  <-  harness.sweep
             <-  reports  <-  papers  <-  pipenem (the CLI)

Plus what each layer must not know at all: the testbed knows nothing of torch, the
harness nothing of tc/netlink, reports read result tables only (no torch, no testbed).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

LAYERS = [
    ("testbed",),
    ("harness", "harness.compressors", "harness.results"),  # bare `harness`: the package's (empty) __init__
    ("harness.runtime",),
    ("harness.sweep",),
    ("reports",),
    ("papers",),
    ("pipenem",),
]
FORBIDDEN = {"testbed": ("torch",), "harness": ("pyroute2",), "reports": ("torch", "testbed", "pyroute2")}
SHARED = ("testbed.errors",)  # the bad-input error every layer raises (exit status 2)


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
    for top in ("testbed", "harness", "reports", "papers", "pipenem"):
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
            if module.split(".")[0] == top and name.split(".")[0] in banned and not name.startswith(SHARED):
                up.append(f"{path.relative_to(ROOT)}:{line} imports {name}: {top}/ must not know {name.split('.')[0]}")
    assert not up, "\n".join(up)


def test_the_readme_layout_names_every_package() -> None:
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout") :]
    packages = {m.rsplit(".", 1)[0] if p.name != "__init__.py" else m for m, p in _modules()}
    # nested packages appear indented under their parent, by their own name
    missing = [p for p in sorted(packages) if p.split(".")[-1] + "/" not in layout]
    assert not missing, f"README Layout does not mention {missing}"
