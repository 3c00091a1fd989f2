"""The generic report of a results folder plus Beyond Top-K's claims and verdicts."""

from __future__ import annotations

from pathlib import Path

from papers.beyond_topk.claims import verdicts
from papers.beyond_topk.paper import PUBLISHED, TITLE
from reports.console import build_report
from reports.verdicts import Verdict


def report(results: Path, out: Path | None = None, title: str | None = None) -> tuple[Path, list[Verdict]]:
    return build_report(results, out, title or f"{TITLE} reproduction", PUBLISHED, verdicts)
