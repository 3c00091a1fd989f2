"""Running a suite: trial by trial through an executor, appending to the result tables.

Executors are pluggable: :class:`LocalExecutor` runs a trial on this machine (twin in
process, distributed over the testbed); ``ray_executor.RayExecutor`` runs trials as Ray
tasks on a cluster (``run_many``). A trial is a self-contained, serializable spec; only
this process writes the tables.
"""

from __future__ import annotations

import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from basics.errors import ConfigError
from harness.results.schema import link_row, provenance, run_settings, trial_row
from harness.results.store import ResultStore, time_to_target
from harness.results.timeline import trial_figures
from harness.runtime.allocator import active
from harness.sweep.suite import Trial

Progress = Callable[[dict], None]
# what the twin's held-out evaluation gives a trial row (harness/runtime/twin.py: evaluate)
EVAL_COLUMNS = ("eval_loss", "eval_accuracy", "eval_loss_uncompressed", "eval_accuracy_uncompressed")


@dataclass
class TrialOutcome:
    row: dict
    steps: list[dict] = field(default_factory=list)
    links: list[dict] = field(default_factory=list)
    spans: list[dict] = field(default_factory=list)  # the stages' timeline (distributed trials)
    link_load: list[dict] = field(default_factory=list)  # bytes on the wire over time (distributed trials)

    def per_trial(self) -> dict[str, list[dict]]:
        return {"spans": self.spans, "link_load": self.link_load}


class Executor(Protocol):
    """Runs one trial. An executor that schedules many at once (Ray) has ``run_many`` instead."""

    def run(self, trial: Trial, run_dir: Path, progress: Progress) -> TrialOutcome: ...


class LocalExecutor:
    """Runs trials on this machine; distributed trials bring their own network up and down."""

    def run(self, trial: Trial, run_dir: Path, progress: Progress) -> TrialOutcome:
        run = trial.checked
        spec = run.spec
        base = {
            **trial_columns(trial),
            "topology": run.topology.name,
            "shaper": run.topology.shaper,
            "backend": trial.backend if trial.execution == "distributed" else "none (single process)",
            "steps_run": spec.train.steps,
            "target_loss": spec.train.target_loss,
            "fwd_wire_ratio": run.payload_wire_ratio("forward"),
            "bwd_wire_ratio": run.payload_wire_ratio("backward") if trial.mode == "train" else None,
        }
        t0 = time.time()
        if trial.execution == "twin":
            from harness.runtime.twin import run_twin

            rows = run_twin(
                run,
                on_step=lambda r: progress({"step": r["step"], "loss": r["loss"]}),
                eval_batches=8 if trial.mode == "train" else 0,
            )
            steps = [{**r, "trial_id": trial.trial_id, "stage": -1} for r in rows]
            losses = [r["loss"] for r in rows]
            tokens = sum(r["tokens"] for r in rows)
            base.update(
                tokens_per_s=tokens / (rows[-1]["end"] - rows[0]["start"]),
                throughput_kind="single-process CPU (no network)",
                final_loss=_tail_mean(losses),
                **{k: rows[-1].get(k) for k in EVAL_COLUMNS},
                initial_loss=losses[0],
                time_to_target_s=time_to_target(rows, spec.train.target_loss),
            )
            links: list[dict] = []
            spans: list[dict] = []
            load: list[dict] = []
            base["allocator"] = active()
        else:
            from harness.runtime.launcher import run_pipeline

            def on_progress(stage: int, msg: dict) -> None:
                if msg["event"] == "step":
                    progress({"step": msg["step"], "loss": msg.get("loss")})

            result = run_pipeline(run, run_dir, backend_name=trial.backend, on_progress=on_progress)
            steps = [{**r, "trial_id": trial.trial_id} for r in result.steps]
            losses = [v for v in result.losses() if v is not None]
            last = [r for r in result.steps if r["stage"] == result.stages - 1]
            base.update(
                tokens_per_s=result.throughput(),
                throughput_kind="pipeline over emulated links",
                final_loss=_tail_mean(losses) if losses else None,
                eval_loss=None,
                initial_loss=losses[0] if losses else None,
                time_to_target_s=time_to_target(last, spec.train.target_loss),
                run_id=result.run_id,
                allocator=result.allocator,
                fwd_link_wire_ratio=result.link_wire_ratio("forward"),
                bwd_link_wire_ratio=result.link_wire_ratio("backward") if trial.mode == "train" else None,
                wire_bytes_per_token=sum(t["interface_bytes"] for t in result.links) / result.tokens(),
                **trial_figures(result.spans, result.link_load, result.stages, spec.train.micro_batches, trial.mode),
            )
            links = link_rows(trial.trial_id, result)
            spans = [{**r, "trial_id": trial.trial_id} for r in result.spans]
            load = [{**r, "trial_id": trial.trial_id} for r in result.link_load]
        base.update(status="ok", error=None, wall_s=time.time() - t0, finished_at=time.time())
        return TrialOutcome(trial_row(base), steps, links, spans, load)


def trial_columns(trial: Trial) -> dict:
    """What every row of a trial records, finished or failed: its sweep labels and the settings
    that change results (``harness.results.schema.run_settings``)."""
    run = trial.checked_or_none()
    settings = (
        run.settings(trial.execution) if run is not None else run_settings(trial.run_spec(), None, trial.execution)
    )
    return {
        **settings,
        **provenance(),
        "trial_id": trial.trial_id,
        "suite": trial.suite,
        "compressor": trial.compressor,
        "rate": trial.rate,
        "fwd": str(trial.fwd),
        "bwd": str(trial.bwd),
        "direction": _direction(trial),
        "mode": trial.mode,
        "variant": trial.variant,
    }


def _tail_mean(values: list[float], k: int = 3) -> float | None:
    """Mean of the last k losses: one step's loss is noisy at small batch sizes."""
    tail = [v for v in values[-k:] if v is not None]
    return sum(tail) / len(tail) if tail else None


def _direction(trial: Trial) -> str:
    f, b = str(trial.fwd) != "none", str(trial.bwd) != "none"
    return {(False, False): "none", (True, False): "fwd", (False, True): "bwd", (True, True): "fwd+bwd"}[(f, b)]


def link_rows(trial_id: str, result) -> list[dict]:
    """Per link, direction and link-plan window: rate applied, bytes sent, achieved rate;
    plus one whole-run row (window -1) with the interface-counter cross-check."""
    out = []
    span_end = max(r["end"] for r in result.steps)
    for tot in result.links:
        stage = int(tot["link"].split("-")[0]) + (0 if tot["direction"] == "forward" else 1)
        key = "bytes_fwd" if tot["direction"] == "forward" else "bytes_bwd"  # what that stage sent on the link
        out.append(
            link_row(
                {
                    "trial_id": trial_id,
                    "link": tot["link"],
                    "direction": tot["direction"],
                    "window": -1,
                    "t_start": None,
                    "t_end": None,
                    "rate_bps": None,
                    "payload_bytes": tot["payload_bytes"],
                    "dense_bytes": tot["dense_bytes"],
                    "interface_bytes": tot["interface_bytes"],
                    "achieved_bps": None,
                }
            )
        )
        windows = sorted(
            (a for a in result.applied if a["link"] == tot["link"] and a["direction"] == tot["direction"]),
            key=lambda a: a["applied_at"],
        )
        for k, w in enumerate(windows):
            start = w["applied_at"]
            end = windows[k + 1]["applied_at"] if k + 1 < len(windows) else span_end
            sent = sum(r[key] for r in result.steps if r["stage"] == stage and start <= r["end"] < end)
            out.append(
                link_row(
                    {
                        "trial_id": trial_id,
                        "link": tot["link"],
                        "direction": tot["direction"],
                        "window": w["window"],
                        "t_start": start,
                        "t_end": end,
                        "rate_bps": w["rate_bps"],
                        "delay_s": w.get("delay_s", 0.0),
                        "jitter_s": w.get("jitter_s", 0.0),
                        "loss_pct": w.get("loss_pct", 0.0),
                        "up": w.get("up", True),
                        "event": w.get("event", ""),
                        "outside": w.get("outside", ""),
                        "payload_bytes": sent,
                        "interface_bytes": None,
                        "achieved_bps": sent * 8 / (end - start) if end > start else None,
                    }
                )
            )
    return out


def failed_row(trial: Trial, error: str) -> dict:
    return trial_row({**trial_columns(trial), "status": "failed", "error": error, "finished_at": time.time()})


def _run_in_child(trial: Trial, run_dir: Path) -> TrialOutcome:
    """A twin trial in a pool process (no progress events cross the process boundary)."""
    return LocalExecutor().run(trial, run_dir, lambda _p: None)


def run_trials(
    trials: list[Trial],
    out: Path,
    executor: Executor | None = None,
    on_event: Callable[[str, Trial, dict], None] | None = None,
    retry_failed: bool = False,
    jobs: int = 1,
) -> ResultStore:
    """Run what is not finished yet; a failing trial is recorded with its error and the sweep goes on.

    ``jobs > 1`` runs twin trials (one process each, no network) that many at a time, before
    the distributed ones, which always run alone: their timings must not share the CPU."""
    store = ResultStore(out)
    executor = executor or LocalExecutor()
    done = store.finished()
    if retry_failed and done:
        t = store.read("trials")
        done = set(t.loc[t["status"] == "ok", "trial_id"])
    emit = on_event or (lambda *_: None)
    todo = []
    for trial in trials:
        if trial.trial_id in done:
            emit("skip", trial, {})
        else:
            todo.append(trial)
    if hasattr(executor, "run_many"):
        executor.run_many(todo, out, store, emit)
        return store
    if jobs > 1 and isinstance(executor, LocalExecutor):
        twins = [t for t in todo if t.execution == "twin"]
        todo = [t for t in todo if t.execution != "twin"]
        _run_pool(twins, out, store, emit, jobs)
    for trial in todo:
        emit("start", trial, {})
        try:
            outcome = executor.run(trial, out / "runs" / trial.trial_id, lambda p, t=trial: emit("progress", t, p))
        except Exception as exc:  # one failed trial must not stop the sweep
            record_failure(store, emit, trial, exc, traceback.format_exc())
            continue
        store.record_trial(outcome.row, outcome.steps, outcome.links, outcome.per_trial())
        emit("done", trial, outcome.row)
    return store


def record_failure(store: ResultStore, emit: Callable, trial: Trial, exc: BaseException, tb: str) -> None:
    msg = f"bad config: {exc}" if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
    store.record_trial(failed_row(trial, msg), [], [])
    emit("failed", trial, {"error": str(exc) if isinstance(exc, ConfigError) else msg, "traceback": tb})


def _run_pool(trials: list[Trial], out: Path, store: ResultStore, emit: Callable, jobs: int) -> None:
    """Twin trials in ``jobs`` spawned processes; only this process writes the tables."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    if not trials:
        return
    # spawn: a fork of a process that already runs torch's thread pools can deadlock
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = {}
        # The workers are spawned inside submit(). They inherit a blocked SIGINT: a Ctrl-C at the
        # terminal reaches the whole process group, and a worker still importing torch would die
        # in spawn_main with a traceback; this process ends them below instead. A Ctrl-C that
        # arrives while blocked here stays pending and is raised on unblocking.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            for trial in trials:
                futures[pool.submit(_run_in_child, trial, out / "runs" / trial.trial_id)] = trial
                emit("start", trial, {})
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        for fut in as_completed(futures):
            trial = futures[fut]
            try:
                outcome = fut.result()
            except Exception as exc:  # recorded, the sweep goes on
                record_failure(store, emit, trial, exc, "".join(traceback.format_exception(exc)))
                continue
            store.record_trial(outcome.row, outcome.steps, outcome.links, outcome.per_trial())
            emit("done", trial, outcome.row)
    except BaseException:
        # Ctrl-C (or a failure here): twin trials hold no network, so their processes are ended
        # now; waiting for the pool would wait for them (and a child killed mid-task can leave
        # the pool's shutdown waiting for ever)
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
