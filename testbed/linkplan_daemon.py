"""The link-plan applier: ``python -m testbed.linkplan_daemon`` (reads its config as JSON on stdin).

A separate process (pyroute2 netns sockets are not thread-safe, and a stalled
harness must not stall the link changes). At each window boundary it applies the
new state with ``change`` and appends what it applied to a JSON-lines file. It changes
only what the plan owns: a link's administrative state only when the plan's own state
changes (a cable someone pulled stays pulled; the link watch names it), and a shaper
someone changed behind its back is said (stderr and the log's ``outside``) before the
window's rate replaces it.
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
from dataclasses import fields

from basics.units import format_rate
from testbed import shaping
from testbed.linkstate import LinkState

STATE_FIELDS = [f.name for f in fields(LinkState)]

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
    targets: dict[tuple[str, str], list[tuple[IPRoute, int, str]]] = {}
    for ns, ifname, label, direction in cfg["shaped"]:
        if ns not in handles:
            handles[ns] = IPRoute(netns=ns, flags=0)
        h = handles[ns]
        targets.setdefault((label, direction), []).append((h, h.link_lookup(ifname=ifname)[0], f"{ifname} in {ns}"))
    # what the plan itself set: it changes a link's state only when the plan changes it (an
    # interface someone else took down stays down), and says so when a shaper it set was changed
    planned_up = {(e["link"], e["direction"]): e.get("up", True) for e in cfg["events"] if e["t"] <= 0}
    set_rate = {(e["link"], e["direction"]): shaping.bucket(e["rate_bps"]).rate for e in cfg["events"] if e["t"] <= 0}

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
            key = (e["link"], e["direction"])
            state = LinkState(**{f: e[f] for f in STATE_FIELDS if f in e})
            notes = []
            for h, idx, where in targets.get(key, []):
                notes += _apply(h, idx, where, cfg, state, set_rate.get(key), planned_up.get(key, True))
            set_rate[key], planned_up[key] = shaping.bucket(state.rate_bps).rate, state.up
            for note in notes:
                print(f"pipenem link plan: link {e['link']} {e['direction']}: {note}", file=sys.stderr, flush=True)
            log.write(json.dumps({**e, "applied_at": time.time(), "outside": "; ".join(notes)}) + "\n")
            log.flush()


def _apply(h, idx: int, where: str, cfg: dict, state: LinkState, last_rate: int | None, was_up: bool) -> list[str]:
    """Apply one window to one interface; what someone else changed there since, in words."""
    notes = []
    found = shaping.applied_rate(h, idx, cfg["shaper"])
    if last_rate is not None and found is not None and found != last_rate:
        notes.append(
            f"{where}: shaper rate {format_rate(found * 8)} was set outside pipenem (pipenem set "
            f"{format_rate(last_rate * 8)}); the plan's {format_rate(state.rate_bps)} applied"
        )
    shaping.change(h, idx, cfg["shaper"], state, cfg["with_netem"])
    is_up = bool(h.get_links(idx)[0]["flags"] & IFF_UP)
    if state.up != was_up:  # the plan changes the link's state: a planned outage starts or ends
        h.link("set", index=idx, state="up" if state.up else "down")
    elif is_up != state.up:
        notes.append(f"{where} was set {'up' if is_up else 'down'} outside pipenem; left as it is")
    return notes


if __name__ == "__main__":
    main()
