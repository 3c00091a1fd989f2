"""What this machine can emulate, found by trying it in a throwaway namespace.

Kernel features are probed for real (a qdisc of each kind on the loopback of a
scratch namespace), not guessed from module lists: on this project's CI kernel
tbf and htb exist and netem does not.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache

from basics.errors import UnsupportedError
from testbed.registry import RunRecord, new_run_id
from testbed.topology import Topology


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    meaning: str


def is_root() -> bool:
    """Root, or at least CAP_NET_ADMIN (bit 12) and CAP_SYS_ADMIN (bit 21, for setns/mount)."""
    if os.geteuid() == 0:
        return True
    try:
        for line in open("/proc/self/status"):
            if line.startswith("CapEff:"):
                caps = int(line.split()[1], 16)
                return bool(caps & (1 << 12)) and bool(caps & (1 << 21))
    except OSError:
        pass
    return False


@cache
def kernel_features() -> dict[str, str | None]:
    """{feature: None if present, else the kernel's error}, probed in a scratch netns."""
    from testbed.netlink import IPRoute, NetlinkError, netns

    feats: dict[str, str | None] = {}
    if not is_root():
        return dict.fromkeys(("netns", "veth", "tbf", "htb", "netem"), "needs root / CAP_NET_ADMIN")
    rec = RunRecord(run_id=new_run_id(), topology="(doctor)", backend="probe")
    name = f"{rec.run_id}-probe"
    rec.add("netns", name)
    try:
        netns.create(name)
        feats["netns"] = None
    except OSError as exc:
        rec.forget()
        return {"netns": str(exc), "veth": "no netns", "tbf": "no netns", "htb": "no netns", "netem": "no netns"}
    try:
        with IPRoute(netns=name, flags=0) as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]
            ipr.link("set", index=lo, state="up")
            try:
                ipr.link("add", ifname="pnv0", kind="veth", peer="pnv1")  # inside the scratch ns only
                feats["veth"] = None
            except NetlinkError as exc:
                feats["veth"] = str(exc)
            for kind, args in (
                ("tbf", {"rate": 125000, "burst": 16000, "limit": 64000}),
                ("htb", {"default": 0x10}),
                ("netem", {"delay": 1000}),
            ):
                try:
                    ipr.tc("add", kind, lo, 0x10000, **args)
                    ipr.tc("del", index=lo, handle=0x10000, root=True)
                    feats[kind] = None
                except NetlinkError as exc:
                    code = exc.args[0] if exc.args else None
                    feats[kind] = (
                        f"the kernel does not know this qdisc kind (no sch_{kind})"
                        if code == 2
                        else (exc.args[1] if len(exc.args) > 1 else str(exc))
                    )
    finally:
        netns.remove(name)
        rec.forget()
    return feats


def docker_engine() -> str | None:
    """None when a Docker engine answers, else why not."""
    try:
        import docker  # optional dependency
    except ImportError:
        return "the 'docker' Python package is not installed (pip install pipenem[docker])"
    try:
        client = docker.from_env(timeout=3)
        client.ping()
        client.close()
        return None
    except Exception as exc:  # any failure means "no engine"
        return f"no engine answers ({type(exc).__name__}); start dockerd"


def doctor() -> list[Check]:
    feats = kernel_features()
    checks = [
        Check(
            "root / CAP_NET_ADMIN", is_root(), f"euid {os.geteuid()}", "needed to create namespaces, veths and qdiscs"
        )
    ]
    meanings = {
        "netns": "one host per stage (the netns backend)",
        "veth": "links between hosts",
        "tbf": "bandwidth shaping (default shaper)",
        "htb": "bandwidth shaping (shaper: htb)",
        "netem": "delay / jitter / loss; without it topologies that set them are refused",
    }
    for key, meaning in meanings.items():
        err = feats.get(key)
        checks.append(Check(key, err is None, "present" if err is None else err, meaning))
    if os.environ.get("PIPENEM_IN_GUEST") != "1":
        from testbed import guest

        ok, detail = guest.available()
        checks.append(
            Check(
                "netem guest",
                ok,
                detail,
                "delay / jitter / loss on this host: pipenem guest -- ARGS… (one CPU; its timing is the guest's)"
                if feats.get("netem")
                else "a kernel with netem as a process (not needed here: this kernel has netem)",
            )
        )
    d = docker_engine()
    checks.append(
        Check("docker engine", d is None, "answers" if d is None else d, "the docker backend (one container per stage)")
    )
    return checks


def require_for(topology: Topology) -> None:
    """Raise UnsupportedError, before anything is created, if this machine cannot emulate it."""
    if not is_root():
        raise UnsupportedError("", "the netns backend needs root (or CAP_NET_ADMIN + CAP_SYS_ADMIN); run as root")
    feats = kernel_features()
    for key in ("netns", "veth", topology.shaper):
        if feats.get(key):
            raise UnsupportedError("", f"this kernel lacks {key}: {feats[key]}")
    needs = topology.needs_netem()
    if needs and feats.get("netem"):
        where, what = needs[0].rsplit(": ", 1)  # "link bn:wan forward: delay" -> the channel, the field
        raise UnsupportedError(
            where,
            f"{what} needs netem, which this kernel does not have "
            f"({feats['netem']}); pipenem refuses rather than silently dropping it. "
            "Remove delay/jitter/loss, use a kernel with sch_netem, or run it in pipenem's netem guest: "
            "pipenem guest -- ARGS… (see pipenem doctor).",
        )
