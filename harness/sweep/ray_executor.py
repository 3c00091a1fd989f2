"""``pipenem run SUITE --executor ray``: trials as Ray tasks on a Ray cluster.

Each trial runs as :class:`LocalExecutor` would run it, on whichever node Ray places it;
its rows come back to this process, which alone writes the tables (same rows, same trial
ids, resumable, failures recorded). Placement:

- twin trials pack by CPUs (``compute.threads``) and GPUs (one for ``compute.device:
  cuda``/``cuda:N``/``auto``);
- distributed trials need a whole host with root and network namespaces: each asks for
  one unit of the custom resource ``pipenem_host`` that such a node advertises
  (``ray start --resources='{"pipenem_host": 1}'``), so two never share a host; and, as
  with the local executor, they start only after the sweep's twin trials finished, so
  nothing of this sweep shares their CPU while they are timed.

Progress (step and loss) travels back over a Ray queue. Ctrl-C cancels the running tasks
with a KeyboardInterrupt inside them, so each trial's testbed tears its network down as on
Ctrl-C of a local run; tables keep every finished trial.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from basics.errors import ConfigError
from harness.results.store import ResultStore
from harness.sweep.suite import Trial
from testbed.capabilities import is_root

log = logging.getLogger(__name__)

HOST_RESOURCE = "pipenem_host"
CANCEL_WAIT_S = 120.0  # bound on waiting for cancelled trials to tear their networks down


def _require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--executor", "ray is not installed: pip install 'pipenem[ray]' (or use the default --executor local)"
        ) from None
    return ray


def _run_remote(trial: Trial, run_dir: str, queue: Any) -> Any:
    """Body of a Ray task: one trial, on this node, with progress sent to the driver. The trial
    travels pickled, with the run the driver checked when it loaded the suite (not checked again)."""
    from harness.sweep.executor import LocalExecutor

    def progress(p: dict) -> None:
        try:
            queue.put_nowait((trial.trial_id, p))
        except Exception:  # a full or closed queue only loses a progress line
            pass

    return LocalExecutor().run(trial, Path(run_dir), progress)


def resources_of(trial: Trial) -> dict[str, Any]:
    """The Ray resources a trial asks for (see the module docstring)."""
    spec = trial.run_spec()
    if trial.execution == "distributed":
        return {"num_cpus": 0, "resources": {HOST_RESOURCE: 1}}
    return {"num_cpus": spec.compute.threads, "num_gpus": 0 if spec.compute.device == "cpu" else 1}


class RayExecutor:
    """Runs a sweep's trials as Ray tasks (``address``: a running cluster; None: a local one)."""

    def __init__(self, address: str | None = None) -> None:
        self.ray = _require_ray()
        self.address = address

    def run_many(
        self, trials: list[Trial], out: Path, store: ResultStore, emit: Callable[[str, Trial, dict], None]
    ) -> None:
        from harness.sweep.executor import record_failure

        ray = self.ray
        started_here = not ray.is_initialized()
        if started_here:
            local = {}
            if self.address is None and is_root():  # a local Ray on a machine that can host the testbed
                local = {"resources": {HOST_RESOURCE: 1}}
            # plug-ins (compressors, models) import in the tasks as they do here: same PYTHONPATH
            env = {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}
            ray.init(
                address=self.address,
                logging_level=logging.WARNING,
                log_to_driver=False,
                runtime_env={"env_vars": env} if env else None,
                **local,
            )
        try:
            if any(t.execution == "distributed" for t in trials):
                have = ray.cluster_resources().get(HOST_RESOURCE, 0)
                if have < 1:
                    raise ConfigError(
                        "--executor",
                        f"distributed trials need a Ray node with the {HOST_RESOURCE!r} resource "
                        f"(ray start ... --resources='{{\"{HOST_RESOURCE}\": 1}}'); this cluster has none",
                    )
            from ray.util.queue import Queue

            queue = Queue(maxsize=10_000)
            task = ray.remote(max_retries=0)(_run_remote)
            for phase in ("twin", "distributed"):  # distributed trials never share a CPU with this sweep's twins
                batch = [t for t in trials if (t.execution == "twin") == (phase == "twin")]
                refs = {}
                for trial in batch:
                    ref = task.options(**resources_of(trial)).remote(trial, str(out / "runs" / trial.trial_id), queue)
                    refs[ref] = trial
                    emit("start", trial, {})
                self._collect(refs, queue, store, emit, record_failure)
        finally:
            if started_here:
                ray.shutdown()

    def _collect(self, refs: dict, queue: Any, store: ResultStore, emit: Callable, record_failure: Callable) -> None:
        ray = self.ray
        by_id = {t.trial_id: t for t in refs.values()}
        pending = list(refs)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1, timeout=0.5)
                self._drain(queue, by_id, emit)
                for ref in ready:
                    trial = refs[ref]
                    try:
                        outcome = ray.get(ref)
                    except Exception as exc:  # recorded, the sweep goes on
                        cause = getattr(exc, "cause", None) or exc
                        record_failure(store, emit, trial, cause, "".join(traceback.format_exception(exc)))
                        continue
                    store.record_trial(outcome.row, outcome.steps, outcome.links, outcome.per_trial())
                    emit("done", trial, outcome.row)
        except KeyboardInterrupt:
            self._cancel(pending)
            raise

    @staticmethod
    def _drain(queue: Any, by_id: dict[str, Trial], emit: Callable) -> None:
        while not queue.empty():
            try:
                trial_id, p = queue.get_nowait()
            except Exception:
                return
            if trial_id in by_id:
                emit("progress", by_id[trial_id], p)

    def _cancel(self, pending: list) -> None:
        """KeyboardInterrupt inside each running task (its testbed tears down), bounded wait."""
        ray = self.ray
        for ref in pending:
            ray.cancel(ref, force=False)
        deadline = time.time() + CANCEL_WAIT_S
        while pending and time.time() < deadline:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
        if pending:
            log.warning("%d cancelled trial(s) did not finish within %.0f s", len(pending), CANCEL_WAIT_S)
