"""Choosing a backend by name, and destroying any backend's recorded run."""

from __future__ import annotations

import re

from basics.errors import ConfigError
from testbed.backends.base import Backend
from testbed.registry import RunRecord, applied_log
from testbed.topology import Topology

BACKENDS = ("netns", "docker")


def make_backend(
    name: str,
    topology: Topology,
    detached: bool = False,
    run_id: str | None = None,
    shared_dirs: list[str] | None = None,
) -> Backend:
    """A backend by name. ``shared_dirs`` are folders the hosts' commands read and write
    (bind-mounted into containers; plain namespaces share the filesystem anyway)."""
    if name == "netns":
        from testbed.backends.netns import NetnsBackend

        return NetnsBackend(topology, run_id=run_id, detached=detached)
    if name == "docker":
        try:
            from testbed.backends.docker import DockerBackend
        except ImportError:
            raise ConfigError("backend", "the docker backend is not available in this version") from None
        return DockerBackend(topology, run_id=run_id, detached=detached, shared_dirs=shared_dirs)
    raise ConfigError("backend", f"unknown backend {name!r}; one of {', '.join(BACKENDS)}")


def destroy_record(record: RunRecord) -> list[str]:
    """Remove exactly the resources a run recorded, then its record. Whatever a record says, only
    names that carry pipenem's prefix and this run's id are touched (a forged or damaged record
    cannot make cleanup delete someone else's namespace, veth, container or process)."""
    from testbed.backends.netns import destroy_resources

    if not RUN_ID.fullmatch(record.run_id) or record.path.name != f"{record.run_id}.json":
        raise ConfigError("record", f"{record.path} does not name a pipenem run (run ids are pn + 6 hex digits)")
    resources = [r for r in record.resources if _ours(record.run_id, r)]
    removed = []
    if any(r["kind"] == "container" for r in resources):
        from testbed.backends.docker import destroy_containers

        removed += destroy_containers(resources)
    removed += destroy_resources(resources)
    record.forget()
    applied_log(record.run_id).unlink(missing_ok=True)
    return removed


RUN_ID = re.compile(r"pn[0-9a-f]{6}")


def _ours(run_id: str, res: dict) -> bool:
    """A recorded resource this run could have made: its name starts with the run's id (helper
    processes: a pid with the kernel start time recorded at launch, checked again when killed)."""
    kind, name = res.get("kind"), str(res.get("name", ""))
    if kind == "process":
        return name.isdigit() and bool(res.get("start"))
    if kind == "container":
        return name.startswith(run_id) and res.get("run") == run_id
    return kind in ("netns", "veth") and name.startswith(run_id)
