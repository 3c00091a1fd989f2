"""Choosing a backend by name, and destroying any backend's recorded run."""

from __future__ import annotations

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
    """Remove exactly the resources a run recorded, then its record."""
    from testbed.backends.netns import destroy_resources

    removed = []
    if any(r["kind"] == "container" for r in record.resources):
        from testbed.backends.docker import destroy_containers

        removed += destroy_containers(record.resources)
    removed += destroy_resources(record.resources)
    record.forget()
    applied_log(record.run_id).unlink(missing_ok=True)
    return removed
