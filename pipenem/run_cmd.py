"""`pipenem run SUITE.yaml --out DIR`: a benchmark suite with a progress display; resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from basics.errors import ConfigError
from pipenem.needs import need


def run_cmd(
    suite: Annotated[Path, typer.Argument(help="suite YAML, or a shipped suite by name (`pipenem list`)")],
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
    executor: Annotated[
        str, typer.Option(help="local (this machine, the default) or ray (trials as tasks on a Ray cluster)")
    ] = "local",
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (e.g. 10.0.0.1:6379; default: start a local Ray)")
    ] = None,
) -> None:
    """Run a benchmark suite: every trial of its sweep, appended to OUT's tables as it finishes."""
    need("torch", "pipenem run")
    from basics.shipped import find
    from harness.results.outdir import exclusive
    from harness.sweep.progress import console, sweep_with_progress
    from harness.sweep.suite import load_suite

    if executor not in ("local", "ray"):
        raise ConfigError("--executor", f"must be local or ray, got {executor!r}")
    if address and executor != "ray":
        raise ConfigError("--address", "is the Ray cluster's address: use it with --executor ray")
    s, trials = load_suite(find("suite", suite, "SUITE"))
    runner = None
    if executor == "ray":
        need("ray", "pipenem run --executor ray")
        from harness.sweep.ray_executor import RayExecutor

        runner = RayExecutor(address)
    with exclusive(out):
        console.print(f"suite {s.name}: {len(trials)} trials -> {out} ({executor} executor)")
        counts = sweep_with_progress(trials, out, retry_failed, title=s.name, jobs=jobs, executor=runner)
    console.print(
        f"{counts['done']} ran, {counts['skipped']} already finished, {counts['failed']} failed; "
        f"tables in {out} (`pipenem report {out}`)"
    )
