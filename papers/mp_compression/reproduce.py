"""`pipenem reproduce mp-compression [--quick]`: seed 003's four claims, per model, with intervals.

Runs the tier's two convergence suites (single-process twin: convergence does not depend on
link speed) — the ResNet on digits, judged on held-out accuracy, and the language model,
judged on held-out loss — then writes the report and verdicts.json and prints the verdicts.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from basics.terminal import make_console
from harness.results.outdir import exclusive

console = make_console()


def reproduce(tier: str, out: Path, check: bool, jobs: int) -> None:
    """Run a tier's suites (resuming), write the report and verdicts.json; with ``check``, exit 1
    if a trial failed or a claim could not be judged at all (its trials missing)."""
    from papers.mp_compression.paper import SUITES, TIERS, TITLE, suite_file
    from papers.mp_compression.report import report
    from papers.reproduction import publish, run_tier

    with exclusive(out):
        t0 = time.time()
        paths = [suite_file(p) for p in SUITES[tier]]
        counts = run_tier(TITLE, TIERS[tier], paths, out, jobs, "mp-compression")
        path, vs = report(out, title=f"{TITLE} reproduction ({TIERS[tier]})")
        publish(out, vs, TITLE, counts, path, t0)
        if check:
            missing = [f"{v.claim} ({v.scale or 'no model'})" for v in vs if v.verdict == "not measured"]
            for m in missing:
                console.print(f"[red]check failed:[/] not measured: {m}")
            if missing or counts["failed"]:
                raise typer.Exit(1)
