"""The generic report of a results folder plus seed 003's claims and verdicts."""

from __future__ import annotations

from pathlib import Path

from papers.mp_compression.claims import verdicts
from papers.mp_compression.paper import PUBLISHED, TITLE
from reports.console import build_report
from reports.verdicts import Verdict


def report(results: Path, out: Path | None = None, title: str | None = None) -> tuple[Path, list[Verdict]]:
    return build_report(results, out, title or f"{TITLE} reproduction", PUBLISHED, verdicts)
