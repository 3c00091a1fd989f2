"""The schedule applier: ``python -m testbed.scheduler CONFIG.json``.

A separate process (pyroute2 netns sockets are not thread-safe, and a stalled
harness must not stall the link changes). At each window boundary it applies the
new state with ``change`` and appends what it applied to a JSON-lines file.
It exits when its owner goes away or on SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from testbed import shaping
from testbed.schedule import Schedule
from testbed.topology import Topology

HORIZON = 600.0  # seconds of schedule computed at a time


def main(config_path: str) -> None:
    cfg = json.loads(Path(config_path).read_text())
    topology = Topology.model_validate(cfg["topology"])
    schedule = Schedule(topology)
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

    print("READY", flush=True)
    base = 0.0
    with open(cfg["applied"], "a") as log:
        while True:
            events = [e for e in schedule.events(base + HORIZON) if e.t >= max(base, 1e-9)]
            for e in events:
                delay = t0 + e.t - time.time()
                if delay > 0:
                    time.sleep(delay)
                if os.getppid() != parent:
                    return  # owner died (SIGKILL): stop touching links; `topo clean` removes them
                for h, idx in targets.get((e.link, e.direction), []):
                    shaping.change(h, idx, cfg["shaper"], e.state, cfg["with_netem"])
                log.write(json.dumps({**e.row(), "applied_at": time.time()}) + "\n")
                log.flush()
            base += HORIZON


if __name__ == "__main__":
    main(sys.argv[1])
