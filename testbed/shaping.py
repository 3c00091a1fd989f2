"""Egress shaping of one link end with netlink (pyroute2), tbf or htb, netem when asked.

Sizing (measured, see topologies/README.md and benchmarks/shaping_burst.py):
the token bucket holds ``BURST_TIME`` worth of bytes at the link rate, but at
least ``MIN_BURST``. Too small a bucket cannot hold a 64 KiB GSO segment and
caps goodput at high rates; too large a bucket lets the first moment of a
transfer through unshaped. The queue holds ``QUEUE_TIME`` of traffic.

Rates change with ``change`` (a full replace of the parameters, done in place),
never delete + add, so queued packets survive a re-sample.

pyroute2 pitfalls handled here: an *int* rate is bytes/s; netem times are µs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from testbed import netem
from testbed.linkstate import LinkState

log = logging.getLogger(__name__)

BURST_TIME = 0.004  # seconds of traffic the bucket may release at once
MIN_BURST = 64 * 1024 + 1514  # one full GSO super-packet plus a frame
QUEUE_TIME = 0.1  # seconds of traffic the queue may hold
MIN_QUEUE = 256 * 1024

# What tbf/htb can be given (pyroute2 0.9 packs tc's 32-bit fields; no 64-bit rate):
# the rate is a u32 of bytes/s, and the bucket's drain time (MIN_BURST at the rate) is a
# u32 of kernel ticks — measured here: 2 kbit/s is the lowest that packs; 8 kbit/s leaves
# room for kernels with a coarser clock.
MAX_RATE_BPS = (2**32 - 1) * 8  # 34.36 Gbit/s
MIN_RATE_BPS = 8_000  # 8 kbit/s

ROOT = 0x10000  # 1:0
HTB_CLASS = 0x10010  # 1:10, also the htb default class: unclassified traffic is shaped too
NETEM_UNDER_HTB = 0x100000  # 10:0
TBF_UNDER_NETEM = 0x100000  # 10:0, child of netem's class 1:1
NETEM_CLASS = 0x10001  # 1:1

Shaper = Literal["tbf", "htb"]


@dataclass(frozen=True)
class BucketParams:
    rate: int  # bytes/s (pyroute2 reads an int as bytes/s)
    burst: int  # bytes
    limit: int  # bytes of queue


def bucket(rate_bps: float, latency_s: float = 0.0) -> BucketParams:
    """Token-bucket sizing derived from the rate (bit/s) and the direction's netem latency:
    with delay the queue holds at least 2 · rate · latency (chaos-mesh's rule), or the
    shaper's tail drops throttle TCP on a long link."""
    rate = int(min(max(rate_bps, MIN_RATE_BPS), MAX_RATE_BPS) / 8)  # a distribution's tail stays packable
    burst = max(int(rate * BURST_TIME), MIN_BURST)
    limit = max(int(rate * QUEUE_TIME), MIN_QUEUE, int(2 * rate * latency_s)) + burst
    return BucketParams(rate=rate, burst=burst, limit=limit)


def latency(state: LinkState) -> float:
    """The one-way latency netem adds in this window, jitter's spread included (seconds)."""
    return state.delay_s + 2 * state.jitter_s


def netem_args(state: LinkState) -> dict[str, Any]:
    return netem.args(state, bucket(state.rate_bps).rate, QUEUE_TIME)


def _tbf(ipr: Any, verb: str, index: int, handle: int, b: BucketParams, **kw: Any) -> None:
    ipr.tc(verb, "tbf", index, handle, rate=b.rate, burst=b.burst, limit=b.limit, **kw)


def _htb_class(ipr: Any, verb: str, index: int, b: BucketParams) -> None:
    quantum = min(max(b.rate // 10, 1514), 200_000)  # silences "quantum is big" and stays fair
    ipr.tc(
        verb,
        "htb",
        index,
        HTB_CLASS,
        parent=ROOT,
        rate=b.rate,
        ceil=b.rate,
        burst=b.burst,
        cburst=b.burst,
        quantum=quantum,
    )


def install(ipr: Any, index: int, shaper: Shaper, state: LinkState, with_netem: bool) -> None:
    """Create the qdisc tree on interface ``index`` (egress)."""
    _apply(ipr, index, shaper, state, with_netem, create=True)


def change(ipr: Any, index: int, shaper: Shaper, state: LinkState, with_netem: bool) -> None:
    """Apply a new state in place (``change`` keeps the queue)."""
    _apply(ipr, index, shaper, state, with_netem, create=False)


def _apply(ipr: Any, index: int, shaper: Shaper, state: LinkState, with_netem: bool, create: bool) -> None:
    b = bucket(state.rate_bps, latency(state) if with_netem else 0.0)
    verb = "add" if create else "change"
    log.debug(
        "tc %s %s on ifindex %d: rate %d B/s burst %d limit %d%s",
        verb,
        shaper,
        index,
        b.rate,
        b.burst,
        b.limit,
        " + netem" if with_netem else "",
    )
    if shaper == "tbf":
        if with_netem:
            ipr.tc(verb, "netem", index, ROOT, **netem_args(state))
            _tbf(ipr, verb, index, TBF_UNDER_NETEM, b, parent=NETEM_CLASS)
        else:
            _tbf(ipr, verb, index, ROOT, b)
        return
    if create:
        ipr.tc("add", "htb", index, ROOT, default=HTB_CLASS & 0xFFFF)
    _htb_class(ipr, f"{verb}-class", index, b)
    if with_netem:
        ipr.tc(verb, "netem", index, NETEM_UNDER_HTB, parent=HTB_CLASS, **netem_args(state))


def applied_rate(ipr: Any, index: int, shaper: Shaper) -> int | None:
    """The rate (bytes/s) the kernel reports for this interface's shaper, for checks."""
    if shaper == "htb":
        for msg in ipr.get_classes(index=index):
            if msg["handle"] == HTB_CLASS:
                parms = msg.get_attr("TCA_OPTIONS").get_attr("TCA_HTB_PARMS")
                return parms["rate"]
        return None
    for msg in ipr.get_qdiscs(index=index):
        if msg.get_attr("TCA_KIND") == "tbf":
            return msg.get_attr("TCA_OPTIONS").get_attr("TCA_TBF_PARMS")["rate"]
    return None
