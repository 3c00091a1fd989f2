"""Papers whose claims pipenem reproduces: one folder each, the only place that knows them.

A paper module provides ``NAME``, ``TITLE``, ``TIERS`` (tier name -> how it is described;
every paper has ``quick`` and ``paper``), ``suite_names()`` (the suites whose results it can
judge), ``report(results, out, title)`` (the generic report plus its claims) and
``reproduce(tier, out, check, jobs)``. A second paper is one new folder and one line here.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from basics.errors import ConfigError

PAPERS = {"beyond-topk": "papers.beyond_topk", "mp-compression": "papers.mp_compression"}


def get(name: str, field: str = "PAPER") -> ModuleType:
    if name not in PAPERS:
        raise ConfigError(field, f"unknown paper {name!r}; available: {', '.join(sorted(PAPERS))}")
    return importlib.import_module(PAPERS[name])


def for_suites(names: set[str]) -> ModuleType | None:
    """The paper whose suites produced these results (all of them), if any: its report then
    adds its claims; results of any other suite get the generic report."""
    for name in PAPERS:
        paper = get(name)
        if names and names <= paper.suite_names():
            return paper
    return None
