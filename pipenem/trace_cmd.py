"""`pipenem trace RUN_DIR`: a run's timeline as a Chrome / Perfetto trace (reports/trace.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from basics.errors import ConfigError

SETTINGS = ("schedule", "runtime", "compressor", "fwd", "bwd", "rate", "mode", "compute", "device", "codec", "seed")


def _steps(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    a, sep, b = text.partition(":")
    try:
        lo = int(a) if a else 0
        hi = (int(b) if b else 1 << 30) if sep else lo + 1  # "3": step 3 alone
    except ValueError:
        lo = hi = -1
    if lo < 0 or hi <= lo:
        raise ConfigError("--steps", f"{text!r}: want A:B (A included, B not, A < B; either may be left out) or N")
    return lo, hi


def _from_run_folder(run_dir: Path) -> tuple[Any, Any, dict]:
    import pandas as pd

    from harness.runtime.spans import span_rows

    rows: list[dict] = []
    for f in sorted(run_dir.glob("stage*.json"), key=lambda p: int(p.stem.removeprefix("stage"))):
        rows += span_rows(int(f.stem.removeprefix("stage")), json.loads(f.read_text()).get("spans"))
    load = run_dir / "link_load.json"
    spec = json.loads((run_dir / "spec.json").read_text()) if (run_dir / "spec.json").exists() else {}
    train, comp = spec.get("train", {}), spec.get("compression", {})
    meta = {
        "run": str(run_dir),
        "schedule": train.get("schedule"),
        "runtime": spec.get("runtime"),
        "mode": train.get("mode"),
        "micro_batches": train.get("micro_batches"),
        "fwd": comp.get("fwd"),
        "bwd": comp.get("bwd"),
        "compute": spec.get("compute"),
        "topology": spec.get("topology"),
        "seed": spec.get("seed"),
    }
    return pd.DataFrame(rows), pd.DataFrame(json.loads(load.read_text()) if load.exists() else []), meta


def _from_results(results: Path, trial: str | None) -> tuple[Any, Any, dict]:
    from harness.results.store import ResultStore

    store = ResultStore(results)
    trials = store.read("trials")
    have = sorted(p.stem for p in (results / "spans").glob("*.parquet")) if (results / "spans").is_dir() else []
    if trial is None:
        if len(have) != 1:
            listed = ", ".join(have[:12]) or "none"
            raise ConfigError("--trial", f"{results} holds timelines of {len(have)} trials ({listed}): name one")
        trial = have[0]
    if trial not in have:
        raise ConfigError("--trial", f"{trial!r} has no timeline in {results} (twin trials have none); have: {have}")
    row = trials[trials["trial_id"] == trial].iloc[0].to_dict() if not trials.empty else {}
    meta = {"trial_id": trial, **{k: row.get(k) for k in SETTINGS if k in row}}
    return store.read_trial("spans", trial), store.read_trial("link_load", trial), meta


def trace_cmd(
    run_dir: Annotated[
        Path, typer.Argument(help="a run folder (pipenem train --out, or RESULTS/runs/<trial_id>) or a results folder")
    ],
    steps: Annotated[str | None, typer.Option(help="steps A:B only (A included, B not), e.g. 2:4, or one step")] = None,
    trial: Annotated[str | None, typer.Option(help="which trial, when RUN_DIR is a results folder")] = None,
    out: Annotated[Path | None, typer.Option(help="where to write the trace (default: RUN_DIR/trace.json)")] = None,
) -> None:
    """Write a Chrome / Perfetto trace (open it in ui.perfetto.dev or chrome://tracing): a
    process per stage with compute, codec, wait and send/arrive tracks, and a counter per
    link and direction (Mbit/s against the planned rate)."""
    from reports.console import console
    from reports.trace import chrome_trace, select_steps

    window = _steps(steps)
    if (run_dir / "stage0.json").exists():
        spans, load, meta = _from_run_folder(run_dir)
    elif (run_dir / "trials.parquet").exists():
        spans, load, meta = _from_results(run_dir, trial)
    else:
        what = "neither a run folder (stage0.json) nor a results folder (trials.parquet)"
        raise ConfigError("RUN_DIR", f"{run_dir}: {what}")
    spans = select_steps(spans, window)
    if spans.empty:
        raise ConfigError("--steps", f"no spans in steps {steps} of {run_dir}")
    doc = chrome_trace(spans, load, {**meta, "steps": steps or "all"})
    path = out or run_dir / "trace.json"
    path.write_text(json.dumps(doc))
    n = sum(1 for e in doc["traceEvents"] if e["ph"] != "M")
    console.print(f"trace: {path} ({n} events; open in ui.perfetto.dev or chrome://tracing)")
