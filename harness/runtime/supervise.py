"""Watching a run's stage processes: their logs, who failed first, and a stage that stopped.

The launcher starts the stages; :class:`Supervisor` follows them until all exit and turns every
way a run can go wrong into one exception naming its culprit:

- a stage that exits with an error: :class:`StageFailed`, naming the stage whose exception came
  *first* (each stage says when it failed, ``messages`` event ``failed``) and quoting it; peers
  that only saw their connection close are named after it, as consequences. Peers' exits are
  awaited for at most :data:`GRACE_S` before deciding;
- a stage process that is stopped (SIGSTOP, a debugger): :class:`StageStalled` after the stall
  bound (``train.stall_timeout``, else :data:`FLOOR_S`); a run no stage says anything in: after
  twice the bound (at least :data:`SILENCE_FACTOR` × the longest step so far), so that a down or
  crawling link is named by the link watch first;
- a link that is down or crawling: the testbed's ``LinkStalled``; a dead link-plan applier: its error.
"""

from __future__ import annotations

import queue
import re
import subprocess
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from harness.runtime import messages
from testbed.linkwatch import LinkWatch

GRACE_S = 2.0  # after the first failed stage: how long its peers' exits and words are awaited
FLOOR_S = 30.0  # the stall bound of a stopped or silent stage, unless train.stall_timeout says
SILENCE_FACTOR = 10.0  # a silent run: this many times its longest step, at least FLOOR_S
# what a stage says when its peer went away first: a consequence, not a cause
ECHO = re.compile(
    r"connection closed by peer|connection reset|broken pipe|econnreset|epipe|socket closed|"
    r"connection refused|recv\(\) failed|read error",
    re.IGNORECASE,
)


def _how(code: int) -> str:
    how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
    if code > 128:  # `docker exec` reports a signal inside the container as 128 + n
        how += f" (signal {code - 128} inside its container)"
    return how


class StageFailed(RuntimeError):
    def __init__(
        self,
        stage: int,
        code: int,
        tail: list[str],
        links: str = "",
        cause: str = "",
        consequences: list[str] | None = None,
    ) -> None:
        # what the link watch saw on its links when it died: a stage's TCP error is often a link's fault
        detail = f": {cause}" if cause else (": " + " | ".join(tail[-3:]) if tail else "")
        then = f"; then {', '.join(consequences)} (its peers saw it go: consequences)" if consequences else ""
        super().__init__(f"stage {stage} {_how(code)}" + (f" while {links}" if links else "") + detail + then)
        self.stage, self.code, self.tail = stage, code, tail


class StageStalled(RuntimeError):
    """A stage made no progress for longer than its bound (stopped, or nothing heard: ``stage``
    is -1 when no evidence names one)."""

    def __init__(self, stage: int, message: str) -> None:
        super().__init__(message)
        self.stage = stage


def process_state(pid: int) -> str | None:
    """The kernel's one-letter state of a process (R, S, D, T stopped, t traced, Z…), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


class Supervisor:
    def __init__(
        self,
        procs: list[subprocess.Popen],
        lines: queue.Queue,
        backend,
        watch: LinkWatch,
        stall_timeout: float | None,
        on_log: Callable[[int, str], None] | None = None,
        on_progress: Callable[[int, dict], None] | None = None,
    ) -> None:
        self.procs, self.lines, self.backend, self.watch = procs, lines, backend, watch
        self.stall_timeout, self.on_log, self.on_progress = stall_timeout, on_log, on_progress
        self.tails = [deque(maxlen=20) for _ in procs]
        self.failed: dict[int, tuple[float, str]] = {}  # stage -> (when, its exception)
        self.exits: dict[int, int] = {}  # stage -> non-zero exit code
        self.first_exit: float | None = None
        self.heard: dict[int, tuple[float, int | None]] = {}  # stage -> (when, its last step)
        self.longest_step = 0.0
        self.stopped_since: dict[int, float] = {}

    def run(self) -> None:
        """Until every stage exited 0; raises StageFailed / StageStalled / LinkStalled."""
        done: set[int] = set()
        while len(done) < len(self.procs):
            self._read(timeout=0.5)
            now = time.time()
            for i, p in enumerate(self.procs):
                code = p.poll()
                if code is None or i in done:
                    continue
                if code == 0:
                    done.add(i)
                elif i not in self.exits:
                    self.exits[i] = code
                    self.first_exit = self.first_exit or now
            if self.exits and (now - self.first_exit >= GRACE_S or len(done) + len(self.exits) == len(self.procs)):
                self._drain()
                raise self._failure()
            if not self.exits:
                self._check_stopped(now)
                self._check_silence(now)
            self.backend.check_plan_applier()
            self.backend.raise_pending_signal()
            self.watch.check()

    # ---------------------------------------------------------------- reading
    def _read(self, timeout: float) -> None:
        try:
            stage, line = self.lines.get(timeout=timeout)
        except queue.Empty:
            return
        self._line(stage, line)

    def _drain(self) -> None:
        """The words still in the pipe (a failing stage's last lines)."""
        while True:
            try:
                stage, line = self.lines.get_nowait()
            except queue.Empty:
                return
            self._line(stage, line)

    def _line(self, stage: int, line: str | None) -> None:
        if line is None:
            return
        msg = messages.parse(line)
        if msg is not None:
            event = msg["event"]
            if event == "failed":
                self.failed.setdefault(stage, (float(msg.get("at", time.time())), str(msg.get("error", ""))))
            if event in ("step", "alive", "joined"):
                self.heard[stage] = (time.time(), msg.get("step"))
                self.longest_step = max(self.longest_step, float(msg.get("step_s") or 0.0))
            if event == "alive":
                return  # liveness only: neither progress for followers nor a log line
            if self.on_progress:
                self.on_progress(stage, msg)
            line = messages.describe(msg)
        self.tails[stage].append(line)
        if self.on_log:
            self.on_log(stage, line)

    # ---------------------------------------------------------------- deciding
    def _failure(self) -> StageFailed:
        """The stage whose failure came first: an exception that is not a lost connection, else
        a stage killed by a signal, else the earliest exception or exit."""
        own = {s: f for s, f in self.failed.items() if not ECHO.search(f[1])}
        killed = [s for s, c in self.exits.items() if c < 0 or c > 128]
        if own:
            first = min(own, key=lambda s: own[s][0])
        elif killed:
            first = killed[0]
        elif self.failed:
            first = min(self.failed, key=lambda s: self.failed[s][0])
        else:
            first = next(iter(self.exits))
        code = self.exits.get(first, 1)
        cause = self.failed[first][1] if first in self.failed else ""
        rest = [f"stage {s} {_how(c)}" for s, c in sorted(self.exits.items()) if s != first]
        links = self.watch.explain(stages={first})
        return StageFailed(first, code, list(self.tails[first]), links=links, cause=cause, consequences=rest)

    def _bound(self) -> float:
        return self.stall_timeout if self.stall_timeout is not None else FLOOR_S

    def _stopped(self, now: float) -> tuple[int, float] | None:
        """(stage, since when) of a stage process that is stopped (SIGSTOP, a debugger's stop)."""
        found = None
        for i, p in enumerate(self.procs):
            if process_state(p.pid) in ("T", "t"):
                since = self.stopped_since.setdefault(i, now)
                found = found or (i, since)
            else:
                self.stopped_since.pop(i, None)
        return found

    def _stopped_error(self, stage: int, now: float) -> StageStalled:
        since = self.stopped_since[stage]
        return StageStalled(
            stage,
            f"stage {stage} (pid {self.procs[stage].pid}) has been stopped for {now - since:.0f} s (SIGSTOP or a "
            f"debugger): it makes no progress and its peers wait on it (bound {self._bound():.0f} s)",
        )

    def _check_stopped(self, now: float) -> None:
        """A stage process stopped for longer than the bound."""
        stopped = self._stopped(now)
        if stopped is not None and now - stopped[1] > self._bound():
            raise self._stopped_error(stopped[0], now)

    def _check_silence(self, now: float) -> None:
        """Steps had begun, and no stage has said anything for longer than the bound: named by
        the evidence there is — a stopped stage, else what the link watch sees on the links."""
        if len(self.heard) < len(self.procs) or not any(step is not None for _, step in self.heard.values()):
            return  # not every stage has joined yet, or no step has ended: joining has its own timeouts
        last = max(t for t, _ in self.heard.values())
        # twice the stall bound: a link that is down or crawling is the link watch's to name first
        bound = 2 * (
            self.stall_timeout if self.stall_timeout is not None else max(FLOOR_S, SILENCE_FACTOR * self.longest_step)
        )
        if now - last <= bound:
            return
        stopped = self._stopped(now)
        if stopped is not None:
            raise self._stopped_error(stopped[0], now)
        where = ", ".join(f"stage {s} after step {st}" for s, (_, st) in sorted(self.heard.items()))
        links = self.watch.explain()
        raise StageStalled(
            -1,
            f"no stage made progress for {now - last:.0f} s (bound {bound:.0f} s; the longest step so far took "
            f"{self.longest_step:.1f} s)" + (f" while {links}" if links else "") + f"; last heard: {where}",
        )
