"""The launcher: brings the topology up, starts one stage worker inside each host, follows
them (``supervise.py``: logs, who failed first, a stopped stage), tears everything down, and
says which stage failed and why."""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.config.schema import RunSpec
from harness.model.data import targets_per_sample
from harness.results.atomic import atomic_write
from harness.runtime.check import CheckedRun, as_checked
from harness.runtime.forkserver import ForkedStage, ForkServer
from harness.runtime.spans import span_rows
from harness.runtime.supervise import StageFailed, StageStalled, Supervisor
from testbed.backends import make_backend
from testbed.linkload import LinkLoad
from testbed.linkwatch import LinkWatch

log = logging.getLogger(__name__)
__all__ = ["RunResult", "StageFailed", "StageStalled", "run_pipeline"]  # the failures, importable from here


@dataclass
class RunResult:
    spec: RunSpec
    backend: str
    run_id: str
    stages: int
    partition: list[int]
    steps: list[dict]  # one row per (stage, step)
    links: list[dict] = field(default_factory=list)  # per link and direction: payload bytes vs interface bytes
    applied: list[dict] = field(default_factory=list)  # bandwidth the link plan applied
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    allocator: str = ""  # the stage workers' malloc (their timings depend on it)
    spans: list[dict] = field(default_factory=list)  # what each stage did when (spans.py), monotonic seconds
    link_load: list[dict] = field(default_factory=list)  # bytes on the wire over time (testbed/linkload.py)

    def link_wire_ratio(self, direction: str) -> float | None:
        """Dense bytes / bytes the links actually carried in one direction (frames, headers,
        indices and control messages included), over every link: the ratio behind the bounds."""
        sel = [lk for lk in self.links if lk["direction"] == direction and lk["payload_bytes"]]
        dense, sent = sum(lk["dense_bytes"] for lk in sel), sum(lk["payload_bytes"] for lk in sel)
        return dense / sent if sent and dense else None

    def losses(self) -> list[float]:
        last = self.stages - 1
        return [r["loss"] for r in sorted(self.steps, key=lambda r: r["step"]) if r["stage"] == last]

    def tokens(self) -> int:
        """Tokens (images, for an image dataset) the run processed, every step."""
        return self.spec.train.batch * targets_per_sample(self.spec.data, self.spec.model.ctx) * self.spec.train.steps

    def throughput(self, skip: int = 1) -> float:
        """Tokens/s over the steps after ``skip`` warm-up steps: from the end of the last
        warm-up step to the end of the last step, both taken as the latest stage to finish."""
        n = self.spec.train.steps
        if n <= skip:
            skip = 0
        ends = {s: max(r["end"] for r in self.steps if r["step"] == s) for s in range(n)}
        starts = min(r["start"] for r in self.steps if r["step"] == 0)
        t0 = ends[skip - 1] if skip else starts
        tokens = self.spec.train.batch * targets_per_sample(self.spec.data, self.spec.model.ctx) * (n - skip)
        return tokens / (ends[n - 1] - t0)


def _links_meta(backend, stages: int) -> list[dict]:
    meta = []
    for i in range(stages):
        entry = {}
        if i > 0:
            link = backend.links[i - 1]
            entry["prev"] = {"me": link.b.address, "peer": link.a.address}
        if i < stages - 1:
            link = backend.links[i]
            entry["next"] = {"me": link.a.address, "peer": link.b.address}
        meta.append(entry)
    return meta


def run_pipeline(
    run: CheckedRun | RunSpec,
    run_dir: str | Path,
    backend_name: str = "netns",
    on_log: Callable[[int, str], None] | None = None,
    on_progress: Callable[[int, dict], None] | None = None,
    on_start: Callable[[list[subprocess.Popen]], None] | None = None,
) -> RunResult:
    """Run a checked run's pipeline over the emulated network (a bare spec is checked first).
    Raises StageFailed naming the stage."""
    run = as_checked(run)
    spec = run.spec
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for old in run_dir.glob("stage*.json"):
        old.unlink()
    # a record of what ran (workers get their spec on stdin, never from this file)
    atomic_write(run_dir / "spec.json", lambda tmp: tmp.write_text(spec.model_dump_json(indent=1)))
    t_start = time.time()
    procs: list[subprocess.Popen] = []
    with make_backend(backend_name, run.topology, shared_dirs=[str(run_dir.resolve())]) as backend:
        # runtime: torch's rendezvous: a file every stage host sees (the run dir is shared with them)
        store = run_dir.resolve() / f"torch-store-{backend.run_id}"
        counters0 = backend.link_counters()
        watch = LinkWatch(backend, run.message_bytes, spec.train.stall_timeout)
        load = LinkLoad(backend).start()
        lines: queue.Queue = queue.Queue()
        server = None
        try:
            server = _fork_server(run, backend)
            for i in range(run.stages):
                procs.append(_start_stage(run, backend, i, run_dir, store, server))
                threading.Thread(target=_pump, args=(i, procs[-1], lines), daemon=True).start()
            if on_start:
                on_start(procs)
            Supervisor(procs, lines, backend, watch, spec.train.stall_timeout, on_log, on_progress).run()
        finally:
            link_load = load.stop()
            watch.close()
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            if server is not None:
                server.close()
            store.unlink(missing_ok=True)
        counters1 = backend.link_counters()
        applied = backend.applied()
        run_id = backend.run_id
    atomic_write(run_dir / "link_load.json", lambda tmp: tmp.write_text(json.dumps(link_load)))
    rows, allocators, spans = [], set(), []
    for i in range(run.stages):
        out = json.loads((run_dir / f"stage{i}.json").read_text())
        rows += out["steps"]
        allocators.add(out["allocator"])
        spans += span_rows(i, out.get("spans"))
    result = RunResult(
        spec,
        backend_name,
        run_id,
        run.stages,
        run.partition,
        rows,
        applied=applied,
        wall_s=time.time() - t_start,
        allocator=", ".join(sorted(allocators)),
        spans=spans,
        link_load=link_load,
    )
    result.links = _link_totals(rows, run.stages, counters0, counters1)
    return result


def _stage_module(run: CheckedRun) -> str:
    return "harness.runtime.torch_worker" if run.spec.runtime == "torch" else "harness.runtime.worker"


def _fork_server(run: CheckedRun, backend) -> ForkServer | None:
    """The run's fork server (stages in namespaces share one imported torch), or None where each
    stage starts an interpreter of its own (containers; ``PIPENEM_FORK=0``)."""
    if backend.kind != "netns" or os.environ.get("PIPENEM_FORK", "1") == "0":
        return None
    # through harness.runtime.allocator: tcmalloc preloaded where the host has it, for every child
    argv = [sys.executable, "-m", "harness.runtime.allocator", "-m", "harness.runtime.forkserver", _stage_module(run)]
    codecs = _codecs_to_rehearse(run)
    if codecs:
        argv.append(codecs)
    log.debug("fork server: %s", " ".join(argv))
    # one OpenMP thread while it imports: torch's import otherwise starts a thread pool, and a
    # process with threads must not fork (each child sets its own count: compute.threads)
    server = ForkServer(argv, {**_worker_env(), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    backend.record.add_process(server.pid)
    return server


def _codecs_to_rehearse(run: CheckedRun) -> str | None:
    """The run's codecs and boundary shape for the fork server to rehearse (JSON), where both
    are pipenem's own: a plug-in's module is not imported, nor its code run, outside its stages."""
    from harness.compressors.registry import BUILTINS

    own = {cls.name for cls in BUILTINS}

    def builtin(spec) -> bool:
        if isinstance(spec, str):
            return spec in own
        return isinstance(spec, dict) and spec.get("name") in own and builtin(spec.get("inner", "none"))

    c = run.spec.compression
    if not (builtin(c.fwd) and builtin(c.bwd)):
        return None
    return json.dumps({"fwd": c.fwd, "bwd": c.bwd, "shape": list(run.boundary_shape)})


def _start_stage(
    run: CheckedRun, backend, i: int, run_dir: Path, store: Path, server: ForkServer | None
) -> subprocess.Popen | ForkedStage:
    """Stage ``i``'s worker process inside its host, given its meta: forked by the run's fork
    server into the stage's namespace, or started there as a process of its own."""
    meta = {
        "spec": run.spec.model_dump(mode="json"),
        "stages": run.stages,
        "partition": run.partition,
        "geometry": asdict(run.geometry),
        "links": _links_meta(backend, run.stages)[i],
        "host_addresses": backend.host_addresses,
        "store": str(store),
    }
    if server is not None:
        p = server.start(i, backend.hosts[i], _stage_module(run), str(run_dir), meta)
        backend.record.add_process(p.pid)
        return p
    # through harness.runtime.allocator: tcmalloc preloaded where the stage's host has it
    argv = backend.exec_argv(
        i, [sys.executable, "-m", "harness.runtime.allocator", "-m", _stage_module(run), str(run_dir), str(i)]
    )
    log.debug("stage %d: %s", i, " ".join(argv))
    p = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        env=_worker_env(),
    )
    backend.record.add_process(p.pid)
    p.stdin.write(json.dumps(meta) + "\n")
    p.stdin.close()
    return p


def _link_totals(rows: list[dict], stages: int, counters0: dict, counters1: dict) -> list[dict]:
    """Per link and direction: the payload bytes the stages sent, their dense size, and the
    kernel interface counters over the run (the cross-check)."""
    out = []
    for i in range(stages - 1):
        label = f"{i}-{i + 1}"
        for direction, stage, key in (("forward", i, "fwd"), ("backward", i + 1, "bwd")):
            payload = sum(r[f"bytes_{key}"] for r in rows if r["stage"] == stage)
            dense = sum(r[f"dense_{key}"] for r in rows if r["stage"] == stage)
            iface = counters1[(label, direction)] - counters0[(label, direction)]
            out.append(
                {
                    "link": label,
                    "direction": direction,
                    "payload_bytes": payload,
                    "dense_bytes": dense,
                    "interface_bytes": iface,
                    "overhead": iface / payload if payload else None,
                }
            )
    return out


def _worker_env() -> dict[str, str]:
    # c10d warns that a netns has no resolvable hostname; it binds by address, so that is noise
    return {**os.environ, "TORCH_CPP_LOG_LEVEL": "ERROR", "PYTHONUNBUFFERED": "1"}


def _pump(stage: int, proc: subprocess.Popen, lines: queue.Queue) -> None:
    for line in proc.stdout:
        lines.put((stage, line.rstrip("\n")))
    lines.put((stage, None))
