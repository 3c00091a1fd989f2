"""The link-plan applier: ``python -m testbed.linkplan_daemon`` (reads its config as JSON on stdin).

A separate process (pyroute2 netns sockets are not thread-safe, and a stalled
harness must not stall the link changes). At each window boundary it applies the
new state with ``change`` and appends what it applied to a JSON-lines file.
The owner sends the first ``horizon`` seconds of events precomputed, so this
process starts without importing pydantic/numpy; later windows are computed
here from the same seeded plan. It exits when its owner goes away or on SIGTERM;
a detached run's applier has no owner and exits when the run's record is removed
(``pipenem topo down``/``clean`` also kill it).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator

from testbed import shaping
from testbed.linkstate import LinkState

IFF_UP = 0x1  # the administrative "up" flag of an interface (a planned outage clears it)


def _events(cfg: dict) -> Iterator[dict]:
    yield from cfg["events"]
    from testbed.linkplan import LinkPlan  # only for runs longer than the horizon
    from testbed.topology import Topology

    plan = LinkPlan(Topology.model_validate(cfg["topology"]))
    base = cfg["horizon"]
    while True:
        yield from (e.row() for e in plan.events(base + 600.0) if e.t >= base)
        base += 600.0


def main() -> None:
    line = sys.stdin.readline()
    if not line:
        return  # the owner gave up before the network was built
    cfg = json.loads(line)
    t0 = cfg["t0"]
    parent = os.getppid()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    from pyroute2 import IPRoute

    handles: dict[str, IPRoute] = {}
    targets: dict[tuple[str, str], list[tuple[IPRoute, int]]] = {}
    for ns, ifname, label, direction in cfg["shaped"]:
        if ns not in handles:
            handles[ns] = IPRoute(netns=ns, flags=0)
        h = handles[ns]
        targets.setdefault((label, direction), []).append((h, h.link_lookup(ifname=ifname)[0]))

    with open(cfg["applied"], "a") as log:
        for e in _events(cfg):
            if e["t"] <= 0:
                continue  # window 0 was installed at bring-up
            delay = t0 + e["t"] - time.time()
            if delay > 0:
                time.sleep(delay)
            if cfg.get("detached"):
                if not os.path.exists(cfg["record"]):
                    return  # the run was taken down
            elif os.getppid() != parent:
                return  # owner died (SIGKILL): stop touching links; `topo clean` removes them
            state = LinkState(e["rate_bps"], e["delay_s"], e["jitter_s"], e["loss_pct"], e.get("up", True))
            for h, idx in targets.get((e["link"], e["direction"]), []):
                shaping.change(h, idx, cfg["shaper"], state, cfg["with_netem"])
                if h.get_links(idx)[0]["flags"] & IFF_UP != (IFF_UP if state.up else 0):
                    h.link("set", index=idx, state="up" if state.up else "down")  # a planned outage
            log.write(json.dumps({**e, "applied_at": time.time()}) + "\n")
            log.flush()


if __name__ == "__main__":
    main()
