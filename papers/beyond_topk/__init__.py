"""Beyond Top-K (seeds/000_…): its suites, claims, bounds, colours and reproduction.

- ``paper.py``: its title, suites and what it published
- ``claims.py``: the claims and the rules that judge them (verdicts with intervals)
- ``bounds.py``: Theorem 3.2 (TopK) and 4.1 (column masking), for the fidelity table
- ``report.py``: the report with its verdicts; ``reproduce.py``: ``pipenem reproduce beyond-topk``
"""

from __future__ import annotations

from pathlib import Path

from papers.beyond_topk.paper import NAME, TIERS, TITLE, suite_names

__all__ = ["NAME", "TIERS", "TITLE", "report", "reproduce", "suite_names"]


def report(results: Path, out: Path | None = None, title: str | None = None) -> tuple[Path, list]:
    from papers.beyond_topk.report import report as build

    return build(results, out, title)


def reproduce(tier: str, out: Path, check: bool, jobs: int) -> None:
    from papers.beyond_topk.reproduce import reproduce as run

    run(tier, out, check, jobs)
