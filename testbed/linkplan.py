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
        self._by_key = {(label, c.direction): c for label, c in self.channels}
        self._cache: dict[tuple[str, str], tuple[float, list[float]]] = {}

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
            loss_burst=channel.params.loss_burst or 1.0,
            reorder=bool(channel.params.reorder),
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

    def _natural(self, channel: Channel, t: float) -> list[float]:
        """The channel's natural change times up to at least ``t`` (cached and extended as the
        plan is read further, so asking for the state now costs a lookup, not a recount)."""
        key = (channel.label, channel.direction)
        until, times = self._cache.get(key, (0.0, []))
        if t >= until:
            until = max(2 * until, t + 1.0, 60.0)
            times = self.change_times(channel, until)
            self._cache[key] = (until, times)
        return times

    def state_at(self, label: str, direction: str, t: float) -> LinkState:
        """The state of one channel at time ``t`` (events applied), in O(log windows)."""
        ch = self._by_key[(label, direction)]
        natural = self._natural(ch, t)
        state = self.state(ch, bisect.bisect_right(natural, t) - 1, t)
        for ev in self.topology.events:
            if ev.applies(label, direction) and ev.at <= t < ev.end:
                state = self._apply(state, ev)
        return state

    @staticmethod
    def _apply(state: LinkState, ev) -> LinkState:
        if ev.down is not None:
            return replace(state, up=False)
        return replace(state, rate_bps=base_value("bandwidth", ev.bandwidth, ev.bandwidth.value))

    def initial(self) -> list[PlanEvent]:
        return [e for e in self.events(until=1e-9)]

    def events(self, until: float) -> list[PlanEvent]:
        """Every state change in [0, until), sorted by time (window 0 = bring-up). A topology
        event starts and ends windows of its own; the values drawn for the natural windows
        do not depend on whether there are events."""
        out = []
        for _, ch in self.channels:
            out += self.channel_events(ch, until)
        out.sort(key=lambda e: (e.t, e.link, e.direction))
        return out

    def channel_events(self, ch: Channel, until: float, limit: int | None = None) -> list[PlanEvent]:
        """One channel's state changes in [0, until) (at most ``limit`` of them)."""
        natural = [t for t in self._natural(ch, until) if t < until]
        faults = [ev for ev in self.topology.events if ev.applies(ch.label, ch.direction)]
        times = sorted(set(natural) | {t for ev in faults for t in (ev.at, ev.end) if t < until})
        out = []
        for w, t in enumerate(times[:limit]):
            state = self.state(ch, bisect.bisect_right(natural, t) - 1, t)
            note = ""
            for ev in faults:
                if ev.at <= t < ev.end:
                    state, note = self._apply(state, ev), ev.describe()
            out.append(PlanEvent(t=t, window=w, link=ch.label, direction=ch.direction, state=state, event=note))
        return out

    def at(self, t: float) -> dict[tuple[str, str], LinkState]:
        """The state of every channel at time ``t``."""
        return {(label, ch.direction): self.state_at(label, ch.direction, t) for label, ch in self.channels}
