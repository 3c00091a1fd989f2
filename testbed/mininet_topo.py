"""Mininet topologies as input: a Python file with a ``Topo`` subclass -> pipenem's Topology.

Hosts become pipeline stages in Mininet's natural name order (h1, h2, ..., h10).
Pipeline link i joins host i and host i+1; its parameters come from the path between
them in Mininet's graph (through switches): bandwidth = the narrowest ``bw`` on the path
(Mininet's unit: Mbit/s), delay = the sum of ``delay``, loss = 1 − Π(1 − loss). Links
without ``bw`` are unshaped in Mininet; here they get ``--default-bw`` (10 Gbit unless
given). Unlike TCLink, pipenem shapes above 1 Gbit.

The file may use the real Mininet (``from mininet.topo import Topo``); where Mininet is
not importable, a small stand-in with the same API (addHost, addSwitch, addLink, build)
is provided under that name, so the file runs unchanged.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import types
from collections import deque
from pathlib import Path
from typing import Any

from basics.errors import ConfigError
from basics.units import split_quantity
from testbed.topology import Topology, build_topology


class CompatTopo:
    """The subset of ``mininet.topo.Topo`` a topology file uses."""

    def __init__(self, *args: Any, **params: Any) -> None:
        self._nodes: dict[str, dict] = {}
        self._links: list[tuple[str, str, dict]] = []
        self.build(*args, **params)

    def build(self, *args: Any, **params: Any) -> None:
        pass

    def addHost(self, name: str, **opts: Any) -> str:  # Mininet's API
        self._nodes[name] = {"isSwitch": False, **opts}
        return name

    def addSwitch(self, name: str, **opts: Any) -> str:
        self._nodes[name] = {"isSwitch": True, **opts}
        return name

    def addLink(self, node1: str, node2: str, port1: int | None = None, port2: int | None = None, **opts: Any) -> tuple:
        self._links.append((node1, node2, opts))
        return node1, node2

    def hosts(self, sort: bool = True) -> list[str]:
        hs = [n for n, i in self._nodes.items() if not i["isSwitch"]]
        return sorted(hs, key=natural_key) if sort else hs

    def switches(self, sort: bool = True) -> list[str]:
        ss = [n for n, i in self._nodes.items() if i["isSwitch"]]
        return sorted(ss, key=natural_key) if sort else ss

    def links(self, sort: bool = False, withKeys: bool = False, withInfo: bool = False) -> list:
        return [(a, b, dict(o)) if withInfo else (a, b) for a, b, o in self._links]


def natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _ensure_mininet_importable() -> None:
    try:
        import mininet.topo  # noqa: F401
    except ImportError:
        pkg = types.ModuleType("mininet")
        mod = types.ModuleType("mininet.topo")
        mod.Topo = CompatTopo
        pkg.topo = mod
        sys.modules.setdefault("mininet", pkg)
        sys.modules.setdefault("mininet.topo", mod)


def _links_of(topo: Any) -> list[tuple[str, str, dict]]:
    return [(a, b, dict(info)) for a, b, info in topo.links(withInfo=True)]


def _path(adj: dict[str, list[tuple[str, dict]]], src: str, dst: str, hosts: set[str]) -> list[dict]:
    """The link options along a shortest path (through switches only) from src to dst."""
    prev: dict[str, tuple[str, dict] | None] = {src: None}
    q = deque([src])
    while q:
        n = q.popleft()
        if n == dst:
            break
        for m, opts in adj.get(n, []):
            if m not in prev and (m == dst or m not in hosts):
                prev[m] = (n, opts)
                q.append(m)
    if dst not in prev:
        return []
    out, n = [], dst
    while prev[n] is not None:
        p, opts = prev[n]
        out.append(opts)
        n = p
    return out


def _ms(v: Any) -> float:
    """A Mininet delay in ms. Mininet hands it to tc as written, and tc reads a bare number as µs."""
    value, unit = split_quantity(str(v))
    return value * {"us": 1e-3, "usec": 1e-3, "ms": 1.0, "msec": 1.0, "s": 1e3, "sec": 1e3, "": 1e-3}[unit]


def topology_from_mininet(
    path: str | Path,
    cls_name: str | None = None,
    default_bw_mbit: float = 10_000.0,
    seed: int = 0,
    args: dict | None = None,
) -> Topology:
    path = Path(path)
    if not path.is_file():
        raise ConfigError("", f"Mininet topology file {str(path)!r} not found")
    _ensure_mininet_importable()
    spec = importlib.util.spec_from_file_location(f"_pipenem_mn_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's file: report, do not crash
        raise ConfigError("", f"cannot load {path.name}: {type(exc).__name__}: {exc}", str(path)) from None
    from mininet.topo import Topo  # the real one or the stand-in

    classes = dict(getattr(module, "topos", {}) or {})
    classes.update(
        {n: c for n, c in vars(module).items() if isinstance(c, type) and issubclass(c, Topo) and c is not Topo}
    )
    if cls_name:
        if cls_name not in classes:
            raise ConfigError(
                "--topo-class", f"{cls_name!r} is not in {path.name}; found {', '.join(classes) or 'none'}", str(path)
            )
        cls = classes[cls_name]
    else:
        uniq = {c for c in classes.values()}
        if len(uniq) != 1:
            raise ConfigError(
                "--topo-class",
                f"{path.name} defines {len(uniq)} Topo classes ({', '.join(classes)}); name one",
                str(path),
            )
        cls = uniq.pop()
    topo = cls(**(args or {}))
    hosts = list(topo.hosts(sort=True))
    if len(hosts) < 2:
        raise ConfigError("hosts", f"{cls.__name__} has {len(hosts)} host(s); a pipeline needs at least 2", str(path))
    adj: dict[str, list[tuple[str, dict]]] = {}
    for a, b, opts in _links_of(topo):
        adj.setdefault(a, []).append((b, opts))
        adj.setdefault(b, []).append((a, opts))
    links = []
    for i in range(len(hosts) - 1):
        hops = _path(adj, hosts[i], hosts[i + 1], set(hosts))
        if not hops:
            raise ConfigError("links", f"no path from {hosts[i]} to {hosts[i + 1]} (stages {i} and {i + 1})", str(path))
        bws = [float(h["bw"]) for h in hops if h.get("bw") is not None]
        link: dict[str, Any] = {"between": [i, i + 1], "bandwidth": f"{min(bws) if bws else default_bw_mbit:g}Mbit"}
        delay = sum(_ms(h["delay"]) for h in hops if h.get("delay"))
        if delay:
            link["delay"] = f"{delay:g}ms"
        keep = 1.0
        for h in hops:
            keep *= 1 - float(h.get("loss") or 0) / 100
        if keep < 1:
            link["loss"] = round((1 - keep) * 100, 6)
        links.append(link)
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", f"mininet-{cls.__name__}")
    return build_topology({"name": name, "seed": seed, "stages": len(hosts), "links": links}, source=str(path))
