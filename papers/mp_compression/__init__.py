"""Seed 003, "Activations and Gradients Compression for Model-Parallel Training" (Rudakov et
al., arXiv 2401.07788): its suites, claims and reproduction.

- ``paper.py``: its title, suites and tiers
- ``claims.py``: the four claims and the rules that judge them (verdicts with intervals, per model)
- ``resnet.py``: the image model (ResNet-18's basic blocks on 8×8 digits), a ``factory:`` model
- ``report.py``: the report with its verdicts; ``reproduce.py``: ``pipenem reproduce mp-compression``
"""

from __future__ import annotations

from pathlib import Path

from papers.mp_compression.paper import NAME, TIERS, TITLE, suite_names

__all__ = ["NAME", "TIERS", "TITLE", "report", "reproduce", "suite_names"]


def report(results: Path, out: Path | None = None, title: str | None = None) -> tuple[Path, list]:
    from papers.mp_compression.report import report as build

    return build(results, out, title)


def reproduce(tier: str, out: Path, check: bool, jobs: int) -> None:
    from papers.mp_compression.reproduce import reproduce as run

    run(tier, out, check, jobs)
