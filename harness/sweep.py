"""Running a suite: trial by trial through an executor, appending to the result tables.

Executors are pluggable: :class:`LocalExecutor` runs a trial on this machine (twin in
process, distributed over the testbed). A cluster executor (Ray, several real hosts)
only needs the same ``run(trial, run_dir, progress) -> TrialOutcome``: a trial is a
self-contained, serializable spec.
"""

from __future__ import annotations

import re
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from harness.allocator import active
from harness.compressors import build
from harness.compressors.base import Context
from harness.config import RunSpec, check_spec
from harness.results import ResultStore, time_to_target
from harness.suite import Trial
from testbed.errors import ConfigError
from testbed.topology import load_topology

Progress = Callable[[dict], None]


@dataclass
class TrialOutcome:
    row: dict
    steps: list[dict] = field(default_factory=list)
    links: list[dict] = field(default_factory=list)


class Executor(Protocol):
    def run(self, trial: Trial, run_dir: Path, progress: Progress) -> TrialOutcome: ...


def payload_wire_ratio(spec: RunSpec, direction: str) -> float:
    """Dense bytes / payload bytes of this spec's compressor on one boundary micro-batch."""
    c = build(spec.compression.fwd if direction == "forward" else spec.compression.bwd)
    shape = (spec.train.batch // spec.train.micro_batches, spec.model.ctx, spec.model.d_model)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    return x.numel() * 4 / c.encode(x, Context()).nbytes


class LocalExecutor:
    """Runs trials on this machine; distributed trials bring their own network up and down."""

    def run(self, trial: Trial, run_dir: Path, progress: Progress) -> TrialOutcome:
        spec = trial.run_spec()
        check_spec(spec)
        topo = load_topology(spec.topology)
        base = {
            "trial_id": trial.trial_id, "suite": trial.suite, "topology": topo.name, "shaper": topo.shaper,
            "compressor": trial.compressor, "rate": trial.rate, "fwd": str(trial.fwd), "bwd": str(trial.bwd),
            "direction": _direction(trial), "mode": trial.mode, "compute": trial.compute, "execution": trial.execution,
            "backend": trial.backend if trial.execution == "distributed" else "none (single process)",
            "device": spec.compute.device if trial.compute == "modeled" else "cpu (real compute)",
            "seed": trial.seed, "steps_run": spec.train.steps, "target_loss": spec.train.target_loss,
            "fwd_wire_ratio": payload_wire_ratio(spec, "forward"),
            "bwd_wire_ratio": payload_wire_ratio(spec, "backward") if trial.mode == "train" else None,
        }
        t0 = time.time()
        if trial.execution == "twin":
            from harness.twin import run_twin

            rows = run_twin(spec, on_step=lambda r: progress({"step": r["step"], "loss": r["loss"]}),
                            eval_batches=8 if trial.mode == "train" else 0)
            steps = [{**r, "trial_id": trial.trial_id, "stage": -1} for r in rows]
            losses = [r["loss"] for r in rows]
            tokens = sum(r["tokens"] for r in rows)
            base.update(tokens_per_s=tokens / (rows[-1]["end"] - rows[0]["start"]), throughput_kind="single-process CPU (no network)",
                        final_loss=_tail_mean(losses), eval_loss=rows[-1].get("eval_loss"), initial_loss=losses[0],
                        time_to_target_s=time_to_target(rows, spec.train.target_loss))
            links: list[dict] = []
            base["allocator"] = active()
        else:
            from harness.launcher import run_pipeline

            def log(stage: int, line: str) -> None:
                m = re.search(r"step (\d+) (?:loss ([\d.]+)|done)", line)
                if m:
                    progress({"step": int(m.group(1)), "loss": float(m.group(2)) if m.group(2) else None})

            result = run_pipeline(spec, run_dir, backend_name=trial.backend, on_log=log)
            steps = [{**r, "trial_id": trial.trial_id} for r in result.steps]
            losses = [v for v in result.losses() if v is not None]
            last = [r for r in result.steps if r["stage"] == result.stages - 1]
            base.update(tokens_per_s=result.throughput(), throughput_kind="pipeline over emulated links",
                        final_loss=_tail_mean(losses) if losses else None, eval_loss=None,
                        initial_loss=losses[0] if losses else None, time_to_target_s=time_to_target(last, spec.train.target_loss),
                        run_id=result.run_id, allocator=result.allocator)
            links = link_rows(trial.trial_id, result)
        base.update(status="ok", error=None, wall_s=time.time() - t0, finished_at=time.time())
        return TrialOutcome(base, steps, links)


def _tail_mean(values: list[float], k: int = 3) -> float | None:
    """Mean of the last k losses: one step's loss is noisy at small batch sizes."""
    tail = [v for v in values[-k:] if v is not None]
    return sum(tail) / len(tail) if tail else None


def _direction(trial: Trial) -> str:
    f, b = str(trial.fwd) != "none", str(trial.bwd) != "none"
    return {(False, False): "none", (True, False): "fwd", (False, True): "bwd", (True, True): "fwd+bwd"}[(f, b)]


def link_rows(trial_id: str, result) -> list[dict]:  # noqa: ANN001
    """Per link, direction and schedule window: rate applied, bytes sent, achieved rate;
    plus one whole-run row (window -1) with the interface-counter cross-check."""
    out = []
    span_end = max(r["end"] for r in result.steps)
    for tot in result.links:
        stage = int(tot["link"].split("-")[0]) + (0 if tot["direction"] == "forward" else 1)
        key = "bytes_fwd" if tot["direction"] == "forward" else "bytes_bwd"
        out.append({"trial_id": trial_id, "link": tot["link"], "direction": tot["direction"], "window": -1,
                    "t_start": None, "t_end": None, "rate_bps": None, "payload_bytes": tot["payload_bytes"],
                    "interface_bytes": tot["interface_bytes"], "achieved_bps": None})
        windows = sorted((a for a in result.applied if a["link"] == tot["link"] and a["direction"] == tot["direction"]),
                         key=lambda a: a["applied_at"])
        for k, w in enumerate(windows):
            start = w["applied_at"]
            end = windows[k + 1]["applied_at"] if k + 1 < len(windows) else span_end
            sent = sum(r[key] for r in result.steps if r["stage"] == stage and start <= r["end"] < end)
            out.append({"trial_id": trial_id, "link": tot["link"], "direction": tot["direction"], "window": w["window"],
                        "t_start": start, "t_end": end, "rate_bps": w["rate_bps"], "payload_bytes": sent,
                        "interface_bytes": None, "achieved_bps": sent * 8 / (end - start) if end > start else None})
    return out


def failed_row(trial: Trial, error: str) -> dict:
    return {"trial_id": trial.trial_id, "suite": trial.suite, "compressor": trial.compressor, "rate": trial.rate,
            "fwd": str(trial.fwd), "bwd": str(trial.bwd), "direction": _direction(trial), "mode": trial.mode,
            "compute": trial.compute, "execution": trial.execution, "seed": trial.seed, "status": "failed",
            "error": error, "finished_at": time.time()}


def run_trials(trials: list[Trial], out: Path, executor: Executor | None = None,
               on_event: Callable[[str, Trial, dict], None] | None = None, retry_failed: bool = False) -> ResultStore:
    """Run what is not finished yet; a failing trial is recorded with its error and the sweep goes on."""
    store = ResultStore(out)
    executor = executor or LocalExecutor()
    done = store.finished()
    if retry_failed and done:
        t = store.read("trials")
        done = set(t.loc[t["status"] == "ok", "trial_id"])
    for trial in trials:
        if trial.trial_id in done:
            on_event and on_event("skip", trial, {})
            continue
        on_event and on_event("start", trial, {})
        try:
            outcome = executor.run(trial, out / "runs" / trial.trial_id, lambda p, t=trial: on_event and on_event("progress", t, p))
        except ConfigError as exc:
            store.record_trial(failed_row(trial, f"bad config: {exc}"), [], [])
            on_event and on_event("failed", trial, {"error": str(exc)})
            continue
        except Exception as exc:  # noqa: BLE001 - one failed trial must not stop the sweep
            msg = f"{type(exc).__name__}: {exc}"
            store.record_trial(failed_row(trial, msg), [], [])
            on_event and on_event("failed", trial, {"error": msg, "traceback": traceback.format_exc()})
            continue
        store.record_trial(outcome.row, outcome.steps, outcome.links)
        on_event and on_event("done", trial, outcome.row)
    return store
