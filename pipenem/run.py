"""`pipenem run SUITE.yaml --out DIR`: a benchmark suite with a progress display; resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from harness.runtime.outdir import exclusive
from harness.sweep.progress import console, sweep_with_progress
from harness.sweep.suite import load_suite


def run_cmd(
    suite: Annotated[Path, typer.Argument(help="suite YAML")],
    out: Annotated[Path, typer.Option(help="results folder (Parquet tables); re-running resumes")] = Path(
        "results/run"
    ),
    retry_failed: Annotated[bool, typer.Option(help="run failed trials again")] = False,
    jobs: Annotated[
        int,
        typer.Option(
            min=1, help="twin trials run this many at a time (one process each); distributed trials always run alone"
        ),
    ] = 1,
) -> None:
    """Run a benchmark suite: every trial of its sweep, appended to OUT's tables as it finishes."""
    s, trials = load_suite(suite)
    with exclusive(out):
        console.print(f"suite {s.name}: {len(trials)} trials -> {out}")
        counts = sweep_with_progress(trials, out, retry_failed, title=s.name, jobs=jobs)
    console.print(
        f"{counts['done']} ran, {counts['skipped']} already finished, {counts['failed']} failed; "
        f"tables in {out} (`pipenem report {out}`)"
    )
