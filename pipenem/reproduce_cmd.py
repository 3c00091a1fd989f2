"""`pipenem reproduce PAPER [--quick]`: a paper's experiments, claim vs measured vs bound."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

import papers


def reproduce_cmd(
    paper: Annotated[str, typer.Argument(help=f"which paper: {', '.join(sorted(papers.PAPERS))}")],
    quick: Annotated[
        bool, typer.Option(help="CI-sized suites (minutes) instead of the paper-sized ones (hours)")
    ] = False,
    out: Annotated[Path, typer.Option(help="results + report folder")] = Path("results/reproduce"),
    check: Annotated[
        bool,
        typer.Option(
            help="exit 1 unless the system properties hold: training gain ≥ 2× and "
            "inference gain ≥ 0.8 × wire ratio (comm-bound profile)"
        ),
    ] = False,
    jobs: Annotated[
        int,
        typer.Option(
            min=1, help="twin trials at a time (default: one per CPU); trials over the links always run alone"
        ),
    ] = os.cpu_count() or 1,
) -> None:
    """Reproduce a paper's claims: prints and writes the verdict table and the report."""
    papers.get(paper).reproduce(quick, out, check, jobs)
