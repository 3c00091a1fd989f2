"""`pipenem report DIR` as a thin command: matplotlib is imported only when it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def report_cmd(
    results: Annotated[Path, typer.Argument(help="a results folder (trials/steps/links Parquet tables)")],
    out: Annotated[Path | None, typer.Option(help="where to write report.html and the PNGs (default: DIR)")] = None,
) -> None:
    """Write report.html (self-contained), the PNGs and CSV tables. Results of a paper's suites
    also get that paper's claims and verdicts; any other suite gets the generic report."""
    import papers
    from reports.console import build_report, console, verdict_table
    from reports.tables import read_table

    trials = read_table(results / "trials.parquet", columns=["suite"])
    names = set(trials["suite"].dropna()) if not trials.empty else set()
    paper = papers.for_suites(names)
    if paper is None:
        path, _ = build_report(results, out)
    else:
        path, vs = paper.report(results, out)
        console.print(verdict_table(vs, paper.TITLE))
    console.print(f"report: {path}")
