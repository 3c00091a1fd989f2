"""On-disk registry of what each run created, so cleanup removes exactly that.

A resource is recorded *before* it is created: a run SIGKILLed between the two
leaves at worst a record of something that does not exist, never an untracked
namespace. ``pipenem topo clean`` walks the records whose owner is gone.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

RUN_PREFIX = "pn"  # every name pipenem gives starts with this plus a 6-hex run id


def state_dir() -> Path:
    """Where run records live (``PIPENEM_STATE_DIR`` overrides; /run is wiped at boot, as are netns)."""
    return Path(os.environ.get("PIPENEM_STATE_DIR", "/run/pipenem"))


def applied_log(run_id: str) -> Path:
    """The JSON-lines log of every link state a run applied (window 0 and the applier's)."""
    return state_dir() / f"{run_id}.applied.jsonl"


def new_run_id() -> str:
    return RUN_PREFIX + secrets.token_hex(3)


def proc_start_time(pid: int) -> str | None:
    """Kernel start time of ``pid`` (guards against pid reuse), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


@dataclass
class RunRecord:
    run_id: str
    topology: str
    backend: str
    owner_pid: int = field(default_factory=os.getpid)
    owner_start: str | None = None
    detached: bool = False
    created_at: float = field(default_factory=time.time)
    resources: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.owner_start is None:
            self.owner_start = proc_start_time(self.owner_pid)

    @property
    def path(self) -> Path:
        return state_dir() / f"{self.run_id}.json"

    def save(self) -> None:
        """Atomic write: a reader never sees half a record."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__, indent=1))
        os.replace(tmp, self.path)

    def add(self, kind: str, name: str, **extra: str) -> None:
        self.resources.append({"kind": kind, "name": name, **extra})
        self.save()

    def add_process(self, pid: int) -> None:
        """A helper process, with its kernel start time: a reused PID is never mistaken for it."""
        self.add("process", str(pid), start=proc_start_time(pid) or "")

    def owner_alive(self) -> bool:
        return proc_start_time(self.owner_pid) == self.owner_start and self.owner_start is not None

    def forget(self) -> None:
        self.path.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path) -> RunRecord:
        return cls(**json.loads(path.read_text()))


def all_records() -> list[RunRecord]:
    d = state_dir()
    if not d.is_dir():
        return []
    out = []
    for p in sorted(d.glob(f"{RUN_PREFIX}*.json")):
        try:
            out.append(RunRecord.load(p))
        except (OSError, ValueError, TypeError):
            continue  # a foreign or corrupt file: not ours to interpret
    return out
