"""The embedded default backend: one Linux network namespace per stage, a veth pair per link.

Addresses come from 198.18.0.0/15, the range reserved for network benchmarks
(RFC 2544; ``testbed/addresses.py``). A link inside a shared bottleneck is routed through
two router namespaces joined by a trunk veth shaped to the bottleneck's rate.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import ExitStack
from typing import Any

from testbed import shaping
from testbed.addresses import host_address, link_addresses, trunk_addresses
from testbed.backends.base import Backend, LinkEnd, LinkInfo
from testbed.capabilities import require_for
from testbed.linkstate import LinkState
from testbed.netlink import IPRoute, NetlinkError, netns
from testbed.registry import proc_start_time
from testbed.topology import Topology, bottleneck_label

log = logging.getLogger(__name__)


def ns_name(run_id: str, stage: int) -> str:
    return f"{run_id}-s{stage}"


class NetnsBackend(Backend):
    kind = "netns"

    def __init__(self, topology: Topology, run_id: str | None = None, detached: bool = False) -> None:
        super().__init__(topology, run_id, detached)
        self._with_netem = bool(topology.needs_netem())
        # (netns, ifname, channel label, direction) for every shaped egress
        self.shaped: list[tuple[str, str, str, str]] = []

    def preflight(self) -> None:
        require_for(self.topology)

    # ------------------------------------------------------------------ create
    def _create(self) -> None:
        topo = self.topology
        initial = {(e.link, e.direction): e.state for e in self.plan.initial()}
        self.hosts = [ns_name(self.run_id, i) for i in range(topo.stages)]
        bottleneck_of = {link: bn for bn in topo.bottlenecks for link in bn.links}
        routers = {bn.name: (f"{self.run_id}-{bn.name}a", f"{self.run_id}-{bn.name}b") for bn in topo.bottlenecks}
        self._create_hosts(self.hosts)
        for name in [r for pair in routers.values() for r in pair]:  # routers are plain namespaces on every backend
            self.record.add("netns", name)
            log.debug("netns create %s", name)
            netns.create(name)
        with ExitStack() as stack:
            ipr = {
                name: stack.enter_context(IPRoute(netns=name, flags=0))
                for name in self.hosts + [r for p in routers.values() for r in p]
            }
            root = stack.enter_context(IPRoute())
            for handle in ipr.values():
                handle.link("set", index=handle.link_lookup(ifname="lo")[0], state="up")
            for k, (ra, rb) in enumerate(routers.values()):
                _enable_forwarding(ra)
                _enable_forwarding(rb)
                bn_name = topo.bottlenecks[k].name
                ta, tb = f"{self.run_id}t{k}a", f"{self.run_id}t{k}b"
                t_a, t_b = trunk_addresses(k)
                self._veth(root, ipr, ta, ra, t_a, tb, rb, t_b)
                self._shape(ipr, ra, ta, bottleneck_label(bn_name), "forward", initial)
                self._shape(ipr, rb, tb, bottleneck_label(bn_name), "backward", initial)
            for i in range(topo.stages - 1):
                a_ns, b_ns = self.hosts[i], self.hosts[i + 1]
                a_if, b_if = f"{self.run_id}l{i}a", f"{self.run_id}l{i}b"
                bn = bottleneck_of.get((i, i + 1))
                ad = link_addresses(i, bottleneck=bn is not None)
                if bn is None:
                    self._veth(root, ipr, a_if, a_ns, ad.a, b_if, b_ns, ad.b)
                else:
                    # stage i -- router A ==trunk== router B -- stage i+1
                    ra, rb = routers[bn.name]
                    t_a, t_b = trunk_addresses(list(routers).index(bn.name))
                    self._veth(root, ipr, a_if, a_ns, ad.a, f"{self.run_id}l{i}x", ra, ad.a_router)
                    self._veth(root, ipr, f"{self.run_id}l{i}y", rb, ad.b_router, b_if, b_ns, ad.b)
                    _route(ipr[a_ns], ad.b_net, ad.a_router)
                    _route(ipr[b_ns], ad.a_net, ad.b_router)
                    _route(ipr[ra], ad.b_net, t_b)
                    _route(ipr[rb], ad.a_net, t_a)
                label = f"{i}-{i + 1}"
                self._shape(ipr, a_ns, a_if, label, "forward", initial)
                self._shape(ipr, b_ns, b_if, label, "backward", initial)
                self.links.append(
                    LinkInfo(i, LinkEnd(a_ns, a_if, ad.a), LinkEnd(b_ns, b_if, ad.b), bn.name if bn else None)
                )
            self._host_addresses(ipr, routers)

    def _host_addresses(self, ipr: dict[str, IPRoute], routers: dict[str, tuple[str, str]]) -> None:
        """Each host's address on its loopback, and routes to it from both pipeline neighbours
        (and through a bottleneck's routers) over exactly the link between them; no host
        routes for anyone else's traffic (a host-address packet never crosses two links)."""
        self.host_addresses = [host_address(i) for i in range(len(self.hosts))]
        for ns, addr in zip(self.hosts, self.host_addresses, strict=True):
            ipr[ns].addr("add", index=ipr[ns].link_lookup(ifname="lo")[0], address=addr, prefixlen=32)
        for link in self.links:
            i = link.index
            lo_addr, hi_addr = self.host_addresses[i], self.host_addresses[i + 1]
            if link.bottleneck is None:
                _route(ipr[link.a.host], f"{hi_addr}/32", link.b.address)
                _route(ipr[link.b.host], f"{lo_addr}/32", link.a.address)
                continue
            ra, rb = routers[link.bottleneck]
            t_a, t_b = trunk_addresses(list(routers).index(link.bottleneck))
            ad = link_addresses(i, bottleneck=True)
            _route(ipr[link.a.host], f"{hi_addr}/32", ad.a_router)
            _route(ipr[ra], f"{hi_addr}/32", t_b)
            _route(ipr[rb], f"{hi_addr}/32", link.b.address)
            _route(ipr[link.b.host], f"{lo_addr}/32", ad.b_router)
            _route(ipr[rb], f"{lo_addr}/32", t_a)
            _route(ipr[ra], f"{lo_addr}/32", link.a.address)

    def _create_hosts(self, names: list[str]) -> None:
        """One named network namespace per stage (the docker backend makes containers instead)."""
        for name in names:
            self.record.add("netns", name)
            log.debug("netns create %s", name)
            netns.create(name)

    def _veth(
        self,
        root: IPRoute,
        ipr: dict[str, IPRoute],
        a_if: str,
        a_ns: str,
        a_ip: str,
        b_if: str,
        b_ns: str,
        b_ip: str,
        prefix: int = 30,
    ) -> None:
        # Recorded before creation; created in the root ns, then each end moved into its host.
        self.record.add("veth", a_if)
        self.record.add("veth", b_if)
        log.debug("veth add %s <-> %s", a_if, b_if)
        root.link("add", ifname=a_if, kind="veth", peer=b_if)
        for ifname, ns in ((a_if, a_ns), (b_if, b_ns)):
            root.link("set", index=root.link_lookup(ifname=ifname)[0], net_ns_fd=ns)
        ends = []
        for ifname, ns, ip in ((a_if, a_ns, a_ip), (b_if, b_ns, b_ip)):
            h = ipr[ns]
            idx = h.link_lookup(ifname=ifname)[0]
            h.addr("add", index=idx, address=ip, prefixlen=prefix)
            h.link("set", index=idx, state="up")
            ends.append((h, idx, ip, h.get_links(idx)[0].get_attr("IFLA_ADDRESS")))
        # Each end knows its peer's MAC from the start: ARP on a link with netem delay takes a
        # round trip, and the kernel holds only ~208 KiB of packets per unresolved neighbour
        # (unres_qlen_bytes): a burst to a not-yet-resolved peer is dropped, also each time an
        # entry would go stale. Measured in the guest: 2723 of 3000 probes lost at 500 ms.
        for (h, idx, _, _), (_, _, peer_ip, peer_mac) in ((ends[0], ends[1]), (ends[1], ends[0])):
            h.neigh("replace", dst=peer_ip, lladdr=peer_mac, ifindex=idx, state="permanent")

    def _shape(
        self,
        ipr: dict[str, IPRoute],
        ns: str,
        ifname: str,
        label: str,
        direction: str,
        initial: dict[tuple[str, str], LinkState],
    ) -> None:
        h = ipr[ns]
        shaping.install(
            h, h.link_lookup(ifname=ifname)[0], self.topology.shaper, initial[(label, direction)], self._with_netem
        )
        self.shaped.append((ns, ifname, label, direction))

    def applier_config(self) -> dict:
        return {"shaped": self.shaped}

    # ------------------------------------------------------------------ destroy
    def _destroy(self) -> None:
        destroy_resources(self.record.resources)

    def link_counters(self) -> dict[tuple[str, str], int]:
        """Bytes each link end has transmitted (kernel interface counters), by (link, direction)."""
        out = {}
        for i, link in enumerate(self.links):
            for direction in ("forward", "backward"):
                end = link.a if direction == "forward" else link.b
                with IPRoute(netns=end.host, flags=0) as h:
                    msg = h.get_links(h.link_lookup(ifname=end.ifname)[0])[0]
                    out[(f"{i}-{i + 1}", direction)] = msg.get_attr("IFLA_STATS64")["tx_bytes"]
        return out

    def exec_argv(self, stage: int, argv: list[str]) -> list[str]:
        return [sys.executable, "-m", "testbed.nsenter", self.hosts[stage], "--", *argv]


def _enable_forwarding(ns: str) -> None:
    # /proc/sys/net is per namespace: write it from a child that entered the router's ns.
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            netns.setns(ns, flags=0)
            with open("/proc/sys/net/ipv4/ip_forward", "w") as fh:
                fh.write("1")
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise RuntimeError(f"could not enable forwarding in {ns}")


def _route(h: IPRoute, dst: str, gateway: str) -> None:
    h.route("add", dst=dst, gateway=gateway)


def destroy_resources(resources: list[dict[str, Any]]) -> list[str]:
    """Remove recorded resources that still exist; returns what was removed.

    Only names from a run's record are touched. Deleting a namespace deletes the
    veth ends inside it (and their peers); veths still in the root namespace
    (a crash between create and move) are deleted by name.
    """
    removed = []
    for res in reversed(resources):
        if res["kind"] == "process":
            removed += _kill_pid(int(res["name"]), res.get("start"))
    present = set(netns.listnetns())
    for res in reversed(resources):
        if res["kind"] == "netns" and res["name"] in present:
            try:
                netns.remove(res["name"])
                removed.append(f"netns {res['name']}")
            except OSError:
                pass
    veths = [r["name"] for r in resources if r["kind"] == "veth"]
    if veths:
        with IPRoute() as root:
            for name in veths:
                for idx in root.link_lookup(ifname=name):
                    try:
                        root.link("del", index=idx)
                        removed.append(f"veth {name}")
                    except NetlinkError:
                        pass  # its peer's deletion took it already
    return removed


def _kill_pid(pid: int, start: str | None = None) -> list[str]:
    """Kill a pipenem helper process we started: only if it is the same process (kernel start
    time as recorded: a record without one names no process we can verify) and still runs our module."""
    if not start or proc_start_time(pid) != start:
        return []  # that PID now belongs to another process, maybe another run's worker
    try:
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
    except OSError:
        return []
    if not any(part.startswith(b"testbed.") or part.startswith(b"harness.") for part in cmdline):
        return []
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        return []
    return [f"process {pid}"]
