"""What every backend (netns, docker) gives the harness: hosts, links, a link plan, cleanup.

Use it as a context manager; ``down()`` runs on normal exit, exceptions, SIGINT
and SIGTERM. SIGKILL leaves a registry record that ``pipenem topo clean`` uses.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from basics.errors import Terminated
from testbed.linkplan import LinkPlan
from testbed.registry import RunRecord, applied_log, new_run_id
from testbed.topology import Topology

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LinkEnd:
    host: str  # namespace (or container) name
    ifname: str
    address: str  # IPv4 without prefix length


@dataclass(frozen=True)
class LinkInfo:
    """Pipeline link ``index`` joins stage ``index`` (end ``a``) and ``index + 1`` (end ``b``)."""

    index: int
    a: LinkEnd
    b: LinkEnd
    bottleneck: str | None = None

    @property
    def label(self) -> str:
        return f"{self.index}-{self.index + 1}"

    def end(self, direction: str) -> tuple[LinkEnd, LinkEnd]:
        """(sender, receiver) for a direction: forward goes from stage i to i+1."""
        return (self.a, self.b) if direction == "forward" else (self.b, self.a)


class PlanApplierDied(RuntimeError):
    """The process applying the link plan exited: the links would silently stop changing."""


PLAN_HORIZON = 600.0  # seconds of events sent precomputed to the plan-applier process


class Backend(ABC):
    kind: str = "base"

    def __init__(self, topology: Topology, run_id: str | None = None, detached: bool = False) -> None:
        self.topology = topology
        self.run_id = run_id or new_run_id()
        self.plan = LinkPlan(topology)
        self.record = RunRecord(run_id=self.run_id, topology=topology.name, backend=self.kind, detached=detached)
        self.hosts: list[str] = []
        self.links: list[LinkInfo] = []
        # one stable address per host (on its loopback), routed from each pipeline neighbour over
        # the link between them: for runtimes that address a peer by one address per host
        self.host_addresses: list[str] = []
        self.t0: float | None = None
        self._applier: subprocess.Popen | None = None
        self._old_handlers: dict[int, Any] = {}
        self._pending_signal: int | None = None

    # -------------------------------------------------------------- interface
    @abstractmethod
    def _create(self) -> None:
        """Create hosts and shaped links (window 0), recording each resource first."""

    @abstractmethod
    def _destroy(self) -> None:
        """Remove what this run created (idempotent)."""

    @abstractmethod
    def exec_argv(self, stage: int, argv: list[str]) -> list[str]:
        """An argv that runs ``argv`` inside the host of ``stage``."""

    @abstractmethod
    def link_counters(self) -> dict[tuple[str, str], int]:
        """Bytes transmitted by the sending end of each (link, direction), from the kernel."""

    def applier_config(self) -> dict:
        """What the plan-applier process needs to apply changes (backend specific)."""
        return {}

    # -------------------------------------------------------------- lifecycle
    def up(self) -> Backend:
        self.preflight()
        self._guard_signals()
        try:
            self.record.save()
            if self._needs_applier():
                self._spawn_applier()  # it imports while we build the network
            self._create()
            self.t0 = time.time()
            self._start_applier()
        except BaseException:
            self.down()
            raise
        return self

    def preflight(self) -> None:  # noqa: B027 - optional hook
        """Refuse what this machine cannot emulate before anything is created."""

    def down(self) -> None:
        try:
            self._stop_applier()
            self._destroy()
            self.record.forget()
            self._applied_path.unlink(missing_ok=True)
        finally:
            self._restore_signals()

    def __enter__(self) -> Backend:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -------------------------------------------------------------- link plan
    @property
    def _applied_path(self) -> Path:
        return applied_log(self.run_id)

    def _needs_applier(self) -> bool:
        return bool(self.topology.events) or any(
            len(LinkPlan.change_times(c, 3600.0)) > 1 for _, c in self.plan.channels
        )

    def _spawn_applier(self) -> None:
        # A detached run's applier outlives this process: its own session (no SIGHUP/SIGINT
        # from our terminal), no inherited output; `topo down`/`clean` kill it by its record.
        quiet = subprocess.DEVNULL if self.record.detached else None
        log.debug("starting the bandwidth daemon of run %s", self.run_id)
        self._applier = subprocess.Popen(
            [sys.executable, "-m", "testbed.linkplan_daemon"],
            stdin=subprocess.PIPE,
            text=True,
            start_new_session=self.record.detached,
            stdout=quiet,
            stderr=quiet,
        )
        self.record.add_process(self._applier.pid)

    @property
    def applier_pid(self) -> int | None:
        return self._applier.pid if self._applier is not None else None

    def _start_applier(self) -> None:
        initial = [{**e.row(), "applied_at": self.t0} for e in self.plan.initial()]
        self._applied_path.write_text("".join(json.dumps(r) + "\n" for r in initial))
        if self._applier is None:
            return
        cfg = {
            "run_id": self.run_id,
            "t0": self.t0,
            "backend": self.kind,
            "shaper": self.topology.shaper,
            "topology": self.topology.model_dump(mode="json"),
            "applied": str(self._applied_path),
            "with_netem": bool(self.topology.needs_netem()),
            "horizon": PLAN_HORIZON,
            "detached": self.record.detached,
            "record": str(self.record.path),
            "events": [e.row() for e in self.plan.events(PLAN_HORIZON)],
            **self.applier_config(),
        }
        self._applier.stdin.write(json.dumps(cfg) + "\n")
        self._applier.stdin.close()
        # Not waited for here (its imports take a few hundred ms and window 1 is seconds away);
        # check_plan_applier() turns a dead applier into an error instead of silence.

    def check_plan_applier(self) -> None:
        """Raise if the plan-applier process died: its links would silently stop changing."""
        if self._applier is not None and self._applier.poll() not in (None, 0):
            raise PlanApplierDied(
                f"the link-plan applier of run {self.run_id} exited with status "
                f"{self._applier.returncode}; bandwidth changes stopped (see its error above)"
            )

    def _stop_applier(self) -> None:
        # SIGKILL is fine: it holds no state, and its log is flushed line by line.
        if self._applier is not None and self._applier.poll() is None:
            self._applier.kill()
            self._applier.wait()
        self._applier = None

    def applied(self) -> list[dict]:
        """Every state actually applied so far: window 0 at bring-up, then the applier's."""
        self.check_plan_applier()
        if not self._applied_path.exists():
            return [{**e.row(), "applied_at": self.t0} for e in self.plan.initial()]
        return [json.loads(line) for line in self._applied_path.read_text().splitlines() if line.strip()]

    # -------------------------------------------------------------- signals
    def _guard_signals(self) -> None:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return

        owner = os.getpid()

        def _raise(signum: int, frame: FrameType | None) -> None:
            if os.getpid() != owner:
                # A forked helper (pyroute2 forks to open netns sockets) inherits this
                # handler; it must die as by default, never tear down the owner's run.
                os._exit(128 + signum)
            # Kept as well as raised: a signal that lands inside an at-fork hook (logging's,
            # when pyroute2 forks in this thread) or a __del__ has its exception printed and
            # dropped; raise_pending_signal() raises it again at the supervisor's next tick.
            self._pending_signal = signum
            raise _as_exception(signum)

        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            if sig == signal.SIGINT and signal.getsignal(sig) is not signal.default_int_handler:
                continue  # a caller that handles (or ignores) Ctrl-C itself keeps doing so
            self._old_handlers[sig] = signal.signal(sig, _raise)

    def raise_pending_signal(self) -> None:
        """Raise the Ctrl-C / SIGTERM / SIGHUP this run received if its exception was dropped."""
        if self._pending_signal is not None:
            raise _as_exception(self._pending_signal)

    def _restore_signals(self) -> None:
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers.clear()


def _as_exception(signum: int) -> BaseException:
    """Ctrl-C as Python raises it; SIGTERM/SIGHUP as :class:`Terminated` (teardown runs either way)."""
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(f"signal {signum}")
