"""The container backend: one Docker container per stage, on the same shaped links.

Each stage is a container started with ``--network none`` and labelled with the run;
its network namespace is attached under the stage's name (as ``ip netns attach`` does),
and from there the netns backend's code creates, addresses and shapes the veth links
exactly as for plain namespaces. Stage commands run inside the containers through
``docker exec``. Cleanup removes the run's containers and links, also after a crash
(``pipenem topo clean`` knows containers).

Images (see containers/README.md): ``pipenem-stage:offline`` is built without a registry
(an empty root imported with ``docker import``; the host's /usr, Python and pipenem are
bind-mounted read-only); ``pipenem-stage:latest`` is what containers/Dockerfile builds
where a registry is reachable. Offline, stage commands run the calling process's own
interpreter (bind-mounted); a Dockerfile image names its interpreter in the
``pipenem.python`` label.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import tarfile
from pathlib import Path
from typing import Any

from basics.errors import UnsupportedError
from testbed.backends.netns import NetnsBackend
from testbed.netlink import netns
from testbed.topology import Topology

log = logging.getLogger(__name__)

OFFLINE_IMAGE = "pipenem-stage:offline"
LABEL = "pipenem.run"


def _client() -> Any:
    try:
        import docker  # optional dependency
    except ImportError:
        raise UnsupportedError("backend", "the docker backend needs the 'docker' package: pip install docker") from None
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:
        raise UnsupportedError(
            "backend",
            f"no Docker engine answers ({type(exc).__name__}); start dockerd "
            "(e.g. `dockerd --bridge=none --iptables=false &`)",
        ) from None
    return client


def code_root() -> Path:
    """The folder holding the testbed/harness packages (a checkout, or a virtualenv inside one)."""
    import testbed

    return Path(testbed.__file__).resolve().parent.parent


def host_mounts() -> list[str]:
    """Read-only binds an offline stage container needs: /usr (bin, lib via symlinks),
    the interpreter's prefixes, and the code."""
    paths = {"/usr", sys.base_prefix, sys.prefix, str(code_root())}
    for extra in ("/lib64", "/lib", "/bin", "/sbin"):
        if not os.path.islink(extra) and os.path.isdir(extra):
            paths.add(extra)
    # a path inside another mounted path needs no mount of its own
    return sorted(p for p in paths if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in paths))


def build_offline_image(client: Any | None = None) -> str:
    """``docker import`` of an empty root (merged-/usr symlinks, mount points): no registry."""
    client = client or _client()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("usr", "tmp", "proc", "sys", "dev", "etc", "run", "root", "work", "opt", "var/tmp"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d in ("tmp", "var/tmp") else 0o755
            tar.addfile(info)
        for link, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"), ("sbin", "usr/sbin")):
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
        for name, text in (
            ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
            ("etc/group", "root:x:0:\n"),
            ("etc/hosts", "127.0.0.1 localhost\n"),
        ):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    repo, tag = OFFLINE_IMAGE.split(":")
    client.api.import_image_from_data(
        buf.getvalue(), repository=repo, tag=tag, changes=['LABEL pipenem.image="offline"']
    )
    return OFFLINE_IMAGE


def ensure_image(client: Any, image: str = OFFLINE_IMAGE) -> tuple[str, str]:
    """(image, python inside it); builds the offline image when it is missing."""
    import docker

    try:
        img = client.images.get(image)
    except docker.errors.ImageNotFound:
        if image != OFFLINE_IMAGE:
            raise UnsupportedError("backend", f"image {image!r} not found; `pipenem containers build`") from None
        build_offline_image(client)
        img = client.images.get(image)
    labels = img.labels or {}
    if labels.get("pipenem.image") == "offline":
        return image, sys.executable  # the host's interpreter (a virtualenv too) is bind-mounted as it is
    return image, labels.get("pipenem.python", "python3")


class DockerBackend(NetnsBackend):
    kind = "docker"

    def __init__(
        self,
        topology: Topology,
        run_id: str | None = None,
        detached: bool = False,
        shared_dirs: list[str] | None = None,
        image: str = OFFLINE_IMAGE,
    ) -> None:
        super().__init__(topology, run_id, detached)
        self.shared_dirs = [str(Path(d).resolve()) for d in (shared_dirs or [])]
        self.image = image
        self.python = sys.executable
        self._client: Any = None

    def preflight(self) -> None:
        super().preflight()
        self._client = _client()
        self.image, self.python = ensure_image(self._client, self.image)

    def _create_hosts(self, names: list[str]) -> None:
        offline = self.image == OFFLINE_IMAGE
        volumes = {p: {"bind": p, "mode": "ro"} for p in (host_mounts() if offline else [])}
        for d in self.shared_dirs:
            Path(d).mkdir(parents=True, exist_ok=True)
            volumes[d] = {"bind": d, "mode": "rw"}
        for name in names:
            self.record.add("container", name, run=self.run_id)
            log.debug("docker run %s (image %s)", name, self.image)
            c = self._client.containers.run(
                self.image,
                ["sleep", "infinity"],
                name=name,
                hostname=name,
                detach=True,
                network_mode="none",
                # no tmpfs on /tmp: it would hide binds below it (a tox virtualenv, run folders)
                labels={LABEL: self.run_id},
                volumes=volumes,
                working_dir="/tmp",
                environment={"HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1"},
            )
            c.reload()
            self.record.add("netns", name)
            netns.attach(name, c.attrs["State"]["Pid"])  # the container's namespace, under the stage's name

    def _destroy(self) -> None:
        destroy_containers(self.record.resources, self._client)
        super()._destroy()

    def exec_argv(self, stage: int, argv: list[str]) -> list[str]:
        if argv and argv[0] == sys.executable:
            argv = [self.python, *argv[1:]]
        return ["docker", "exec", "-i", self.hosts[stage], *argv]


def destroy_containers(resources: list[dict], client: Any | None = None) -> list[str]:
    """Remove the recorded containers that still exist and carry this run's label."""
    import docker

    names = [(r["name"], r.get("run")) for r in resources if r["kind"] == "container"]
    if not names:
        return []
    try:
        client = client or _client()
    except UnsupportedError:
        return []
    removed = []
    for name, run in names:
        try:
            c = client.containers.get(name)
        except docker.errors.NotFound:
            continue
        if run and (c.labels or {}).get(LABEL) != run:
            continue  # same name, not ours
        c.remove(force=True)
        removed.append(f"container {name}")
    return removed
