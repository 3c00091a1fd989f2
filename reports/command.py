"""`pipenem report DIR` as a thin command: matplotlib is imported only when it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def report_cmd(
    results: Annotated[Path, typer.Argument(help="a results folder (trials/steps/links Parquet tables)")],
    out: Annotated[Path | None, typer.Option(help="where to write report.html and the PNGs (default: DIR)")] = None,
) -> None:
    """Write report.html (self-contained), the PNGs and CSV tables; print the verdicts."""
    from reports.cli import build_report, console, verdict_table

    path, vs = build_report(results, out)
    console.print(verdict_table(vs))
    console.print(f"report: {path}")
