"""The seeded, time-varying link plan (what each link is shaped to, window by window).

Given a topology, the sequence of (time, window, link, direction, state) is fully
determined by its seed: each value is drawn from a generator seeded with
``(seed, channel key, window)``, so it does not depend on the order of queries,
on how far the plan was read, or on which other links exist.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from testbed.distributions import PARAM_KINDS, Trace, base_value
from testbed.linkstate import LinkState
from testbed.topology import Channel, Topology


@dataclass(frozen=True)
class PlanEvent:
    """From ``t`` seconds after bring-up, ``channel`` is shaped to ``state``."""

    t: float
    window: int
    link: str  # "1-2", or "bn:NAME" for a shared bottleneck
    direction: str
    state: LinkState
    event: str = ""  # the topology event in force ("down 10s", "bandwidth 1Mbit for 20s"), if any

    def row(self) -> dict:
        return {
            "t": self.t,
            "window": self.window,
            "link": self.link,
            "direction": self.direction,
            **asdict(self.state),
            "event": self.event,
        }


class LinkPlan:
    """Every channel's state at every window, reproducible from the topology's seed."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.channels: list[tuple[str, Channel]] = [
            (c.label, c) for c in topology.channels() + topology.bottleneck_channels()
        ]

    def state(self, channel: Channel, window: int, t: float) -> LinkState:
        """The sampled state of ``channel`` in its natural ``window`` (events not applied)."""
        values = {}
        for idx, kind in enumerate(PARAM_KINDS):
            dist = getattr(channel.params, kind)
            if dist is None:
                values[kind] = 0.0
                continue
            rng = np.random.default_rng([self.topology.seed, channel.key, idx, window])
            values[kind] = base_value(kind, dist, dist.sample(rng, t))
        return LinkState(
            rate_bps=values["bandwidth"],
            delay_s=values["delay"],
            jitter_s=values["jitter"],
            loss_pct=values["loss"],
        )

    @staticmethod
    def change_times(channel: Channel, until: float) -> list[float]:
        """Times in [0, until) at which this channel's state may change."""
        times = {0.0}
        p = channel.params
        for kind in PARAM_KINDS:
            dist = getattr(p, kind)
            if isinstance(dist, Trace):
                times.update(dist.change_points(until))
        if p.resample_every:
            times.update(k * p.resample_every for k in range(math.ceil(until / p.resample_every)))
        return sorted(t for t in times if t < until)

    def initial(self) -> list[PlanEvent]:
        return [e for e in self.events(until=1e-9)]

    def events(self, until: float) -> list[PlanEvent]:
        """Every state change in [0, until), sorted by time (window 0 = bring-up). A topology
        event starts and ends windows of its own; the values drawn for the natural windows
        do not depend on whether there are events."""
        out = []
        for label, ch in self.channels:
            natural = self.change_times(ch, until)
            faults = [ev for ev in self.topology.events if ev.applies(label, ch.direction)]
            times = sorted(set(natural) | {t for ev in faults for t in (ev.at, ev.end) if t < until})
            for w, t in enumerate(times):
                base = self.state(ch, bisect.bisect_right(natural, t) - 1, t)
                active = [ev for ev in faults if ev.at <= t < ev.end]
                state, note = base, ""
                for ev in active:
                    if ev.down is not None:
                        state = replace(state, up=False)
                    else:
                        state = replace(state, rate_bps=base_value("bandwidth", ev.bandwidth, ev.bandwidth.value))
                    note = ev.describe()
                out.append(PlanEvent(t=t, window=w, link=label, direction=ch.direction, state=state, event=note))
        out.sort(key=lambda e: (e.t, e.link, e.direction))
        return out

    def at(self, t: float) -> dict[tuple[str, str], LinkState]:
        """The state of every channel at time ``t``."""
        current: dict[tuple[str, str], LinkState] = {}
        for e in self.events(until=t + 1e-9):
            current[(e.link, e.direction)] = e.state
        return current
