"""A sweep's progress: a rich progress bar on a terminal; plain lines in a log.

Without a terminal (CI, ``nohup``, a pipe) live widgets turn into truncated fragments, so
each trial gets a line when it starts and one when it ends (n/N, label, status, its key
figure, elapsed, ETA), and a long trial a heartbeat line at most every ``HEARTBEAT_S``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from basics.terminal import make_console
from harness.sweep.suite import Trial

if TYPE_CHECKING:
    from harness.sweep.executor import Executor

console = make_console()
HEARTBEAT_S = 30.0


def trial_label(trial: Trial) -> str:
    return f"{trial.compressor}{'' if trial.rate is None else f' {trial.rate:g}'} {trial.mode} {trial.execution}"


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def key_figure(row: dict) -> str:
    """What a finished trial's line says: throughput for distributed trials, loss for twins."""
    parts = []
    if row.get("final_loss") is not None:
        parts.append(f"loss {row['final_loss']:.4f}")
    if row.get("execution") == "distributed" and row.get("tokens_per_s") is not None:
        parts.append(f"{row['tokens_per_s']:,.0f} tok/s")
    if row.get("bubble_fraction") is not None:
        parts.append(f"bubble {row['bubble_fraction']:.2f}")
    return ", ".join(parts)


class PlainLines:
    """The log's progress: whole lines only (see the module's docstring)."""

    def __init__(self, total: int, title: str, out=None) -> None:
        self.total, self.title = total, title
        self.out = out or console
        self.t0 = time.time()
        self.finished = 0
        self.started: dict[str, float] = {}
        self.beat: dict[str, float] = {}

    def _eta(self) -> str:
        if not self.finished:
            return "?"
        per = (time.time() - self.t0) / self.finished
        return _clock(per * (self.total - self.finished))

    def line(self, text: str) -> None:
        self.out.print(text, soft_wrap=True, highlight=False, markup=False)

    def __call__(self, kind: str, trial: Trial, data: dict) -> None:
        label, tid = trial_label(trial), trial.trial_id
        now = time.time()
        if kind == "start":
            self.started[tid] = self.beat[tid] = now
            self.line(f"{self.title} [{self.finished + 1}/{self.total}] start {label} ({tid})")
        elif kind == "progress":
            if now - self.beat.get(tid, now) < HEARTBEAT_S:
                return
            self.beat[tid] = now
            step, loss = data.get("step"), data.get("loss")
            spec = trial.run_spec()
            el = now - self.started.get(tid, now)
            tps = (step + 1) * spec.train.batch * spec.model.ctx / el if step is not None and el > 0 else 0
            self.line(
                f"{self.title}   {label}: step {step}/{spec.train.steps}"
                + (f" loss {loss:.3f}" if loss is not None else "")
                + f", {tps:,.0f} tok/s, {_clock(el)} in"
            )
        elif kind in ("done", "failed", "skip"):
            self.finished += 1
            took = _clock(now - self.started.pop(tid, now))
            head = f"{self.title} [{self.finished}/{self.total}]"
            if kind == "skip":
                self.line(f"{head} already finished {label} ({tid})")
                return
            if kind == "done":
                status = f"ok {key_figure(data)}".rstrip()
            else:
                status = f"failed: {str(data.get('error')).splitlines()[0][:300] if data.get('error') else ''}"
            timing = f"took {took}, elapsed {_clock(now - self.t0)}, ETA {self._eta()}"
            self.line(f"{head} {status} | {label} ({tid}) | {timing}")


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
    names = {"done": "done", "failed": "failed", "skip": "skipped"}
    if not console.is_terminal:
        lines = PlainLines(len(trials), title)

        def on_line(kind: str, trial: Trial, data: dict) -> None:
            if kind in names:
                counts[names[kind]] += 1
            lines(kind, trial, data)

        run_trials(trials, out, executor, on_event=on_line, retry_failed=retry_failed, jobs=jobs)
        return counts
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
            label = trial_label(trial)
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
                counts[names[kind]] += 1
                bar.advance(task)
                if kind == "failed":
                    console.print(
                        Text.assemble((f"trial {trial.trial_id} ({label}) failed: ", "red"), str(data.get("error")))
                    )

        run_trials(trials, out, executor, on_event=on_event, retry_failed=retry_failed, jobs=jobs)
    return counts
