"""Watching the links while a workload runs, so a dead or crawling link is named, never a hang.

The kernel knows what the workload cannot: whether a link end is up, how many bytes
each sending end has put on the wire, and whether its shaper holds data waiting to go.
A link **stalls** when, for longer than its bound,

- an end is down (operstate not UP: ``ip link set down``, a scheduled outage), or
- its sender's shaper holds queued data at every sample while the bytes sent grow at
  less than :data:`SLOW_FRACTION` of the rate the schedule gives now.

The bound is ``stall_timeout`` when the user sets one; otherwise the time the largest
message needs at the scheduled rate, × :data:`SLOW_FACTOR`, but at least
:data:`FLOOR_S`. A short outage (below the bound) is ridden through: TCP retransmits and
the transfer resumes. Scheduled bandwidth (events included) is what is expected, so a
link slowed *by the schedule* is not a stall.

Netlink handles stay open per namespace (opening one forks; poll from one thread only).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from testbed.units import format_rate

log = logging.getLogger(__name__)

FLOOR_S = 30.0
SLOW_FACTOR = 10.0  # the bound: this many times the largest message's transfer time
SLOW_FRACTION = 0.1  # "far below" the schedule: under a tenth of its rate
POLL_S = 1.0


class LinkStalled(RuntimeError):
    """A link was down, or made (almost) no progress with data queued, for longer than its bound."""

    def __init__(self, link: str, direction: str | None, message: str) -> None:
        super().__init__(message)
        self.link, self.direction = link, direction


@dataclass
class _Channel:
    label: str
    direction: str
    sender: Any  # LinkEnd
    receiver: Any
    samples: deque = field(default_factory=deque)  # (t, tx_bytes, backlog_bytes)
    down_since: float | None = None
    down_what: tuple = ()  # (LinkEnd, operstate) first seen down


class LinkWatch:
    """Poll with :meth:`check` (cheap; it samples at most every ``POLL_S``); raises LinkStalled."""

    def __init__(self, backend: Any, message_bytes: int, stall_timeout: float | None = None) -> None:
        from pyroute2 import IPRoute

        self.backend, self.message_bytes, self.stall_timeout = backend, message_bytes, stall_timeout
        self._handles: dict[str, Any] = {}
        self._index: dict[tuple[str, str], int] = {}
        self._channels: list[_Channel] = []
        for link in backend.links:
            for direction in ("forward", "backward"):
                snd, rcv = link.end(direction)
                self._channels.append(_Channel(link.label, direction, snd, rcv))
                for end in (snd, rcv):
                    if end.host not in self._handles:
                        self._handles[end.host] = IPRoute(netns=end.host, flags=0)
                    h = self._handles[end.host]
                    self._index[(end.host, end.ifname)] = h.link_lookup(ifname=end.ifname)[0]
        self._last = 0.0

    def close(self) -> None:
        for h in self._handles.values():
            h.close()
        self._handles.clear()

    # ---------------------------------------------------------------- bounds
    def expected_bps(self, label: str, direction: str, now: float) -> float:
        """The rate the schedule gives this channel now (events included)."""
        state = self.backend.schedule.at(max(0.0, now - (self.backend.t0 or now))).get((label, direction))
        return state.rate_bps if state is not None else float("inf")

    def bound_s(self, rate_bps: float) -> float:
        if self.stall_timeout is not None:
            return self.stall_timeout
        return max(FLOOR_S, SLOW_FACTOR * self.message_bytes * 8 / rate_bps)

    # ---------------------------------------------------------------- sampling
    def _link(self, end: Any) -> Any:
        h = self._handles[end.host]
        return h.get_links(self._index[(end.host, end.ifname)])[0]

    def _backlog(self, end: Any) -> int:
        h = self._handles[end.host]
        total = 0
        for q in h.get_qdiscs(index=self._index[(end.host, end.ifname)]):
            stats = q.get_attr("TCA_STATS2")
            queue = stats.get_attr("TCA_STATS_QUEUE") if stats is not None else None
            if queue is not None:
                total += queue["backlog"]
        return total

    def check(self, now: float | None = None) -> None:
        """Sample (at most every ``POLL_S``) and raise LinkStalled for a channel past its bound."""
        now = time.time() if now is None else now
        if now - self._last < POLL_S:
            return
        self._last = now
        for ch in self._channels:
            rate = self.expected_bps(ch.label, ch.direction, now)
            bound = self.bound_s(rate)
            self._sample(ch, now, bound)
            if ch.down_since is not None and now - ch.down_since > bound:
                raise LinkStalled(ch.label, None, self._down_text(ch, now) + f" (bound {bound:.0f} s)")
            crawl = self._crawl(ch, rate)
            if crawl and now - ch.samples[0][0] >= bound:
                raise LinkStalled(ch.label, ch.direction, f"link {ch.label} {ch.direction} stalled: {crawl} (bound {bound:.0f} s)")

    def explain(self) -> str:
        """What the links look like now, for a failure that surfaced elsewhere first (a stage whose
        TCP connection timed out on a crawling link): every channel down or crawling, even
        for less than its bound. '' when every link looks healthy."""
        now = time.time()
        notes = []
        for ch in self._channels:
            rate = self.expected_bps(ch.label, ch.direction, now)
            try:
                self._sample(ch, now, self.bound_s(rate))
            except Exception:  # noqa: BLE001 - the namespace may be going away: explain what we have
                pass
            if ch.down_since is not None:
                notes.append(self._down_text(ch, now))
            elif crawl := self._crawl(ch, rate):
                notes.append(f"link {ch.label} {ch.direction} crawling: {crawl}")
        return "; ".join(notes)

    def _sample(self, ch: _Channel, now: float, bound: float) -> None:
        snd, rcv = self._link(ch.sender), self._link(ch.receiver)
        down = [(e, m.get_attr("IFLA_OPERSTATE")) for e, m in ((ch.sender, snd), (ch.receiver, rcv))
                if m.get_attr("IFLA_OPERSTATE") != "UP"]
        if down:
            if ch.down_since is None:
                ch.down_since, ch.down_what = now, down[0]
                log.debug("link %s: %s is %s", ch.label, down[0][0].ifname, down[0][1])
            ch.samples.clear()
            return
        ch.down_since = None
        ch.samples.append((now, snd.get_attr("IFLA_STATS64")["tx_bytes"], self._backlog(ch.sender)))
        while ch.samples and now - ch.samples[0][0] > bound + POLL_S:
            ch.samples.popleft()

    @staticmethod
    def _down_text(ch: _Channel, now: float) -> str:
        end, state = ch.down_what
        return (f"link {ch.label} is down: interface {end.ifname} in {end.host} has been {state} "
                f"for {now - ch.down_since:.0f} s")

    @staticmethod
    def _crawl(ch: _Channel, rate: float) -> str:
        """'' unless the sampled span had data queued throughout and moved < SLOW_FRACTION of ``rate``."""
        if len(ch.samples) < 2 or not all(backlog > 0 for _, _, backlog in ch.samples):
            return ""
        (t0, tx0, _), (t1, tx1, _) = ch.samples[0], ch.samples[-1]
        achieved = (tx1 - tx0) * 8 / (t1 - t0)
        if achieved >= SLOW_FRACTION * rate:
            return ""
        return (f"{tx1 - tx0:,} bytes moved in the last {t1 - t0:.0f} s with data queued throughout "
                f"({format_rate(achieved)}); the schedule gives {format_rate(rate)}")
