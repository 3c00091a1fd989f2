"""A sweep under a rich progress bar: one line per trial, step and loss as they come."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from harness.sweep.suite import Trial

if TYPE_CHECKING:
    from harness.sweep.executor import Executor

console = Console()


def sweep_with_progress(
    trials: list[Trial],
    out: Path,
    retry_failed: bool = False,
    title: str = "trials",
    jobs: int = 1,
    executor: Executor | None = None,
) -> dict:
    """Run trials under a rich progress display; returns counts."""
    from harness.sweep.executor import run_trials

    counts = {"done": 0, "failed": 0, "skipped": 0}
    state = {"t0": time.time()}
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
    ) as bar:
        task = bar.add_task(title, total=len(trials), info="")

        def on_event(kind: str, trial: Trial, data: dict) -> None:
            label = (
                f"{trial.compressor}{'' if trial.rate is None else f' {trial.rate:g}'} {trial.mode} {trial.execution}"
            )
            if kind == "start":
                state["t0"] = time.time()
                bar.update(task, info=label)
            elif kind == "progress":
                step, loss = data.get("step"), data.get("loss")
                el = time.time() - state["t0"]
                spec = trial.run_spec()
                tps = (step + 1) * spec.train.batch * spec.model.ctx / el if step is not None and el > 0 else 0
                bar.update(
                    task,
                    info=f"{label} | step {step}"
                    + (f" loss {loss:.3f}" if loss is not None else "")
                    + f" | {tps:,.0f} tok/s",
                )
            elif kind in ("done", "failed", "skip"):
                counts[{"done": "done", "failed": "failed", "skip": "skipped"}[kind]] += 1
                bar.advance(task)
                if kind == "failed":
                    console.print(
                        Text.assemble((f"trial {trial.trial_id} ({label}) failed: ", "red"), str(data.get("error")))
                    )

        run_trials(trials, out, executor, on_event=on_event, retry_failed=retry_failed, jobs=jobs)
    return counts
