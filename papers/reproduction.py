"""What every paper's ``reproduce`` does alike: run a tier's suites as one resumable sweep, then
print and write its verdicts. The paper decides what runs between (e.g. a fidelity table)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from basics.terminal import make_console
from harness.sweep.suite import Trial, load_suite
from reports.verdicts import Verdict

console = make_console()


def tier_trials(paths: list[Path]) -> list[Trial]:
    """Every trial of the suites, each once (suites may share a trial: same config, same id)."""
    trials, seen = [], set()
    for p in paths:
        for t in load_suite(p)[1]:
            if t.trial_id not in seen:
                seen.add(t.trial_id)
                trials.append(t)
    return trials


def run_tier(title: str, tier: str, paths: list[Path], out: Path, jobs: int, sweep_title: str) -> dict:
    """Run (resuming) every trial of the tier's suites; the sweep's counts."""
    from harness.sweep.progress import sweep_with_progress

    trials = tier_trials(paths)
    console.print(f"reproducing {title} ({tier}): {len(trials)} trials -> {out}")
    return sweep_with_progress(trials, out, retry_failed=True, title=sweep_title, jobs=jobs)


def publish(out: Path, vs: list[Verdict], title: str, counts: dict, report_path: Path, t0: float) -> None:
    """verdicts.json, and the convergence summary, the verdict table and the counts printed."""
    from reports.console import summary_table, verdict_table
    from reports.tables import load

    (out / "verdicts.json").write_text(json.dumps([v.row() for v in vs], indent=1))
    console.print(summary_table(load(out)))
    console.print(verdict_table(vs, title))
    console.print(
        f"{counts['done']} trials ran, {counts['skipped']} reused, {counts['failed']} failed; "
        f"wall {time.time() - t0:.0f} s; report {report_path}"
    )
