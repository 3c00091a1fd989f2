"""`pipenem reproduce PAPER [--quick | --scaling]`: a paper's experiments, claim vs measured vs bound."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

import papers
from basics.errors import ConfigError
from pipenem.needs import need


def reproduce_cmd(
    paper: Annotated[str, typer.Argument(help=f"which paper: {', '.join(sorted(papers.PAPERS))}")],
    quick: Annotated[
        bool, typer.Option(help="CI-sized suites (minutes) instead of the paper-sized ones (hours)")
    ] = False,
    scaling: Annotated[
        bool,
        typer.Option(help="the convergence claims across model sizes (a paper that has this tier; hours on a CPU)"),
    ] = False,
    tier: Annotated[
        str | None,
        typer.Option(
            help="any tier of the paper by name (beyond-topk: quick, scaling, paper, paper-gpu, gpu-subset; "
            "mp-compression: quick, paper)"
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="results + report folder")] = Path("results/reproduce"),
    check: Annotated[
        bool,
        typer.Option(
            help="exit 1 if a trial failed or, where throughput is measured, unless the system properties hold: "
            "training gain ≥ 2× and inference gain ≥ 0.8 × wire ratio (comm-bound profile)"
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
    need("torch", "pipenem reproduce")
    if quick + scaling + (tier is not None) > 1:
        raise ConfigError("--tier", "choose one tier: --quick, --scaling or --tier NAME")
    module = papers.get(paper)
    chosen = tier or ("quick" if quick else "scaling" if scaling else "paper")
    if chosen not in module.TIERS:
        raise ConfigError("--tier", f"{paper} has no tier {chosen!r}; its tiers: {', '.join(module.TIERS)}")
    module.reproduce(chosen, out, check, jobs)
