"""Watching the links while a workload runs, so a dead or crawling link is named, never a hang.

The kernel knows what the workload cannot: whether a link end is up, how many bytes
each sending end has put on the wire, and whether its shaper holds data waiting to go.
A link **stalls** when, for longer than its bound,

- an end is down (operstate not UP: ``ip link set down``, a planned outage), or
- data waits to cross it at every sample while the bytes sent grow at less than
  :data:`SLOW_FRACTION` of the rate the link plan gives now. Data *waits* when the
  sender's shaper holds a backlog or the sender's TCP sockets to the receiver have
  segments in flight, unacknowledged, while held up — more data written than sent, or
  retransmitting (sock_diag). The shaper alone is not enough: on a crawling link TCP backs
  off and the shaper sits empty for seconds between retransmissions; an idle or lightly used
  link (a stage computing; small messages awaiting delayed ACKs) has neither.

The bound is ``stall_timeout`` when the user sets one; otherwise the time the largest
message needs at the planned rate plus one round trip of planned delay, × :data:`SLOW_FACTOR`,
but at least :data:`FLOOR_S`. On a lossy link the expected rate is what one TCP flow can reach
there (Mathis's bound at the planned round trip, :mod:`testbed.tcpmodel`), not the shaped
rate. A short outage (below the bound) is ridden through: TCP retransmits and the transfer
resumes. Planned bandwidth (events included) is what is expected, so a
link slowed *by the plan* is not a stall.

Netlink handles stay open per namespace (opening one forks; poll from one thread only).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from socket import AF_INET
from typing import Any

from pyroute2.netlink import NETLINK_SOCK_DIAG
from pyroute2.netlink.diag import DiagSocket, MarshalDiag
from pyroute2.netlink.nlsocket import NetlinkSocket

from basics.units import format_rate
from testbed import shaping
from testbed.tcpmodel import mathis_bps

log = logging.getLogger(__name__)

FLOOR_S = 30.0
SLOW_FACTOR = 10.0  # the bound: this many times the largest message's transfer time
SLOW_FRACTION = 0.1  # "far below" the plan: under a tenth of its rate
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
    samples: deque = field(default_factory=deque)  # (t, tx_bytes, backlog_bytes, unacked_segments)
    down_since: float | None = None
    down_what: tuple = ()  # (LinkEnd, operstate) first seen down


class LinkWatch:
    """Poll with :meth:`check` (cheap; it samples at most every ``POLL_S``); raises LinkStalled."""

    def __init__(self, backend: Any, message_bytes: int, stall_timeout: float | None = None) -> None:
        from testbed.netlink import IPRoute

        self.backend, self.message_bytes, self.stall_timeout = backend, message_bytes, stall_timeout
        self._handles: dict[str, Any] = {}
        self._diag: dict[str, Any] = {}  # sock_diag handles per sending host, opened on first use
        self._unacked: dict[str, dict[str, int]] = {}  # host -> peer address -> segments, this poll
        self._index: dict[tuple[str, str], int] = {}
        # a receiver is addressed by its link end's address or by its host address
        self._host_address = dict(zip(backend.hosts, backend.host_addresses, strict=False))
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
        for h in [*self._handles.values(), *self._diag.values()]:
            h.close()
        self._handles.clear()
        self._diag.clear()

    # ---------------------------------------------------------------- bounds
    def planned_bps(self, label: str, direction: str, now: float) -> float:
        """The rate the link plan gives this channel now (events included)."""
        t = max(0.0, now - (self.backend.t0 or now))
        try:
            return self.backend.plan.state_at(label, direction, t).rate_bps
        except KeyError:
            return float("inf")

    def rtt_s(self, label: str, direction: str, now: float) -> float:
        """The round trip the plan gives this channel now: both directions' netem delay."""
        t = max(0.0, now - (self.backend.t0 or now))
        try:
            return sum(self.backend.plan.state_at(label, d, t).delay_s for d in ("forward", "backward"))
        except KeyError:
            return 0.0

    def expected_bps(self, label: str, direction: str, now: float) -> float:
        """What TCP can carry on this channel now: the planned rate, or less where loss bounds
        a TCP flow at the planned round trip (Mathis, testbed.tcpmodel): a lossy link that
        moves at what TCP can reach there is slow, not stalled."""
        rate = self.planned_bps(label, direction, now)
        t = max(0.0, now - (self.backend.t0 or now))
        try:
            loss = self.backend.plan.state_at(label, direction, t).loss_pct / 100
        except KeyError:
            return rate
        return min(rate, mathis_bps(self.rtt_s(label, direction, now), loss))

    def bound_s(self, rate_bps: float, rtt_s: float = 0.0) -> float:
        """How long a channel may crawl or be down before it is a stall: the largest message's
        time on it (bytes / rate, plus a round trip of delay) × SLOW_FACTOR, at least FLOOR_S."""
        if self.stall_timeout is not None:
            return self.stall_timeout
        return max(FLOOR_S, SLOW_FACTOR * (self.message_bytes * 8 / rate_bps + rtt_s))

    # ---------------------------------------------------------------- sampling
    def _where(self, end: Any) -> tuple[Any, int]:
        """(the netlink handle of its namespace, its interface index)."""
        return self._handles[end.host], self._index[(end.host, end.ifname)]

    def _link(self, end: Any) -> Any:
        h, index = self._where(end)
        return h.get_links(index)[0]

    def _backlog(self, end: Any) -> int:
        h, index = self._where(end)
        total = 0
        for q in h.get_qdiscs(index=index):
            stats = q.get_attr("TCA_STATS2")
            queue = stats.get_attr("TCA_STATS_QUEUE") if stats is not None else None
            if queue is not None:
                total += queue["backlog"]
        return total

    def _unacked_segments(self, sender: Any, receiver: Any) -> int:
        """Unacknowledged segments of the sender's TCP sockets to the receiver (its link or host
        address) that are held up: the socket also has data it could not send yet, or is
        retransmitting. A flow that sends a little now and then (an idle link, delayed ACKs) has
        segments in flight at any instant too, but none held up: that is not data waiting."""
        if sender.host not in self._unacked:
            if sender.host not in self._diag:
                self._diag[sender.host] = _NetnsDiag(sender.host)
            by_peer: dict[str, int] = {}
            for m in self._diag[sender.host].get_sock_stats(family=AF_INET, extensions=_INET_DIAG_INFO):
                info = m.get_attr("INET_DIAG_INFO")
                if info is not None and _held_up(info):
                    by_peer[m["idiag_dst"]] = by_peer.get(m["idiag_dst"], 0) + info["tcpi_unacked"]
            self._unacked[sender.host] = by_peer
        by_peer = self._unacked[sender.host]
        return by_peer.get(receiver.address, 0) + by_peer.get(self._host_address.get(receiver.host, ""), 0)

    def check(self, now: float | None = None) -> None:
        """Sample (at most every ``POLL_S``) and raise LinkStalled for a channel past its bound."""
        now = time.time() if now is None else now
        if now - self._last < POLL_S:
            return
        self._last = now
        self._unacked.clear()
        stalled = []
        for ch in self._channels:
            rate = self.expected_bps(ch.label, ch.direction, now)
            bound = self.bound_s(rate, self.rtt_s(ch.label, ch.direction, now))
            self._sample(ch, now, bound)
            if ch.down_since is not None and now - ch.down_since > bound:
                raise LinkStalled(ch.label, None, self._down_text(ch, now) + f" (bound {bound:.0f} s)")
            crawl, since, shaped = self._crawl(ch, rate)
            if crawl and now - since >= bound:
                stalled.append((not shaped, since, ch, f"{crawl} (bound {bound:.0f} s)"))
        if stalled:
            unshaped, _, ch, text = min(stalled, key=lambda c: c[:2])
            raise LinkStalled(ch.label, ch.direction, self._culprit(ch, text, unshaped, now))

    def _culprit(self, ch: _Channel, text: str, unshaped: bool, now: float) -> str:
        """The stall message. A crawling direction also starves the reverse one of its TCP
        acknowledgements, so both can look stalled, the starved one sometimes first: name the
        direction whose shaper is set below the plan (changed behind pipenem's back) if
        there is one, and say so when the stalled direction's own shaper held nothing."""
        rev = next(c for c in self._channels if c.label == ch.label and c.direction != ch.direction)
        own, other = self._shaper_below_plan(ch, now), self._shaper_below_plan(rev, now)
        if unshaped and other and not own:
            return (
                f"link {rev.label} {rev.direction} stalled: {other}; link {ch.label} {ch.direction}, "
                f"starved of its acknowledgements: {text}"
            )
        note = own or (
            f"its own shaper held no backlog, so link {rev.label} {rev.direction}, which carries "
            f"its acknowledgements, may be what is slow"
            if unshaped
            else ""
        )
        return f"link {ch.label} {ch.direction} stalled: {text}" + (f"; {note}" if note else "")

    def _shaper_below_plan(self, ch: _Channel, now: float) -> str:
        """'' unless the sender's shaper is set to well under the planned rate."""
        planned = self.planned_bps(ch.label, ch.direction, now)
        try:
            rate = shaping.applied_rate(*self._where(ch.sender), self.backend.topology.shaper)
        except Exception:  # a diagnosis only; the namespace may be going away
            return ""
        if rate is None or rate * 8.0 >= 0.5 * planned:
            return ""
        return (
            f"its shaper is set to {format_rate(rate * 8.0)}, the plan gives {format_rate(planned)} "
            f"(changed outside pipenem?)"
        )

    def explain(self, stages: set[int] | None = None) -> str:
        """What the links look like now, for a failure that surfaced elsewhere first (a stage whose
        TCP connection timed out on a crawling link): every channel down, crawling (even for
        less than its bound) or shaped well under its plan — of the links of ``stages`` only,
        when given (a stage's failure is about its own links). '' when they look healthy."""
        now = time.time()
        notes = []
        self._unacked.clear()
        for ch in self._channels:
            ends = {int(x) for x in ch.label.split("-")}
            if stages is not None and not ends & stages:
                continue
            rate = self.expected_bps(ch.label, ch.direction, now)
            try:
                self._sample(ch, now, self.bound_s(rate, self.rtt_s(ch.label, ch.direction, now)))
            except Exception:  # the namespace may be going away: explain what we have
                pass
            if ch.down_since is not None:
                notes.append(self._down_text(ch, now))
                continue
            crawl = self._crawl(ch, rate, trailing=False)[0]
            shaper = self._shaper_below_plan(ch, now)
            if crawl or shaper:
                notes.append(f"link {ch.label} {ch.direction} crawling: " + "; ".join(n for n in (crawl, shaper) if n))
        return "; ".join(notes)

    def _sample(self, ch: _Channel, now: float, bound: float) -> None:
        snd, rcv = self._link(ch.sender), self._link(ch.receiver)
        down = [
            (e, m.get_attr("IFLA_OPERSTATE"))
            for e, m in ((ch.sender, snd), (ch.receiver, rcv))
            if m.get_attr("IFLA_OPERSTATE") != "UP"
        ]
        if down:
            if ch.down_since is None:
                ch.down_since, ch.down_what = now, down[0]
                log.debug("link %s: %s is %s", ch.label, down[0][0].ifname, down[0][1])
            ch.samples.clear()
            return
        ch.down_since = None
        ch.samples.append(
            (
                now,
                snd.get_attr("IFLA_STATS64")["tx_bytes"],
                self._backlog(ch.sender),
                self._unacked_segments(ch.sender, ch.receiver),
            )
        )
        while ch.samples and now - ch.samples[0][0] > bound + POLL_S:
            ch.samples.popleft()

    def _down_text(self, ch: _Channel, now: float) -> str:
        """What is down, for how long, and who did it: the link plan (a planned outage) or not."""
        end, state = ch.down_what
        t = max(0.0, now - (self.backend.t0 or now))
        try:
            planned_up = self.backend.plan.state_at(ch.label, ch.direction, t).up
        except KeyError:
            planned_up = True
        who = (
            "a planned outage (topology event)"
            if not planned_up
            else "set down outside pipenem (the link plan has it up)"
        )
        return (
            f"link {ch.label} is down: interface {end.ifname} in {end.host} has been {state} "
            f"for {now - ch.down_since:.0f} s, {who}"
        )

    @staticmethod
    def _crawl(ch: _Channel, rate: float, trailing: bool = True) -> tuple[str, float, bool]:
        """('', 0, False) unless a run of samples with data waiting moved < SLOW_FRACTION of
        ``rate``; else (what was seen, when that run began, whether the sender's shaper held
        a backlog in it). The run is the trailing one (what is happening now), or with
        ``trailing=False`` the latest one, which may have ended (a stage's connection that
        timed out on the crawl took its waiting data with it)."""
        samples = list(ch.samples)
        end = len(samples)
        if not trailing:
            while end and not _waiting(samples[end - 1]):
                end -= 1
        start = end
        while start and _waiting(samples[start - 1]):
            start -= 1
        if end - start < 2:
            return "", 0.0, False
        (t0, tx0, *_), (t1, tx1, *_) = samples[start], samples[end - 1]
        achieved = (tx1 - tx0) * 8 / (t1 - t0)
        if achieved >= SLOW_FRACTION * rate:
            return "", 0.0, False
        shaped = any(backlog > 0 for _, _, backlog, _ in samples[start:end])
        return (
            f"{tx1 - tx0:,} bytes moved in {t1 - t0:.0f} s with data waiting throughout "
            f"({format_rate(achieved)}); the plan gives {format_rate(rate)}",
            t0,
            shaped,
        )


TCP_CA_RECOVERY = 3  # tcp_info's congestion-avoidance states from here on: recovering a loss (4: RTO)


def _held_up(info: Any) -> bool:
    """A TCP socket whose data cannot go: bytes written but not sent yet, or retransmissions."""
    try:
        notsent = info["tcpi_notsent_bytes"]
    except KeyError:  # an older kernel's shorter tcp_info
        notsent = 0
    return (
        notsent > 0
        or info["tcpi_retransmits"] > 0
        or info["tcpi_backoff"] > 0
        or info["tcpi_ca_state"] >= TCP_CA_RECOVERY
    )


def _waiting(sample: tuple) -> bool:
    _, _, backlog, unacked = sample
    return backlog > 0 or unacked > 0


_INET_DIAG_INFO = 1 << (2 - 1)  # ask sock_diag for struct tcp_info (INET_DIAG_INFO = 2)


class _NetnsDiag(DiagSocket):
    """A sock_diag socket opened inside a named network namespace (pyroute2's DiagSocket
    takes no netns argument; its base class does)."""

    def __init__(self, netns: str) -> None:
        NetlinkSocket.__init__(self, NETLINK_SOCK_DIAG, netns=netns, flags=0)
        self.set_marshal(MarshalDiag())
        self.bind()
