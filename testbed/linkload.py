"""Links over time: the bytes each sending link end has put on the wire, sampled in a thread.

Every ``1 / hz`` seconds (25 Hz by default) the sampler reads the transmit byte counter of the
sending end of every (link, direction), and the rate the link plan gives that channel then.
Times are ``time.monotonic()``: the clock the stages' spans use (one clock for every network
namespace and container on this kernel), so a link's load lines up with what the stages did.

The counters come from ``/proc/net/dev`` of each host's namespace, opened once from a thread
that entered the namespace (a ``/proc/net`` file keeps the namespace it was opened in) and
re-read with ``pread``: about 10 µs a host and sample, where a netlink dump costs milliseconds —
cheap enough to sample at 25 Hz beside a running pipeline without taking its CPU. What is not
cheap is a row per channel and sample in the launcher: at 256 stages (510 channels) 25 Hz
would be 12,750 rows a second, a good part of a core and a GiB of rows over a three-minute run,
so the rate is lowered to keep ``MAX_ROWS_PER_S`` (:func:`sampling_hz`; every row has its time).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

DEFAULT_HZ = 25.0
MAX_ROWS_PER_S = 2000.0  # channel samples a second: 25 Hz up to 80 channels (a 41-stage chain)


def sampling_hz(hz: float, channels: int) -> float:
    """The rate a topology of ``channels`` sending ends is sampled at: ``hz``, lowered so that
    ``channels × rate ≤ MAX_ROWS_PER_S`` (never under 1 Hz)."""
    return max(1.0, min(hz, MAX_ROWS_PER_S / max(channels, 1)))


def _open_net_dev(host: str) -> int:
    """A descriptor of ``/proc/net/dev`` as the namespace ``host`` sees it."""
    from testbed.netlink import netns

    box: dict[str, Any] = {}

    def enter_and_open() -> None:  # setns changes this thread only; it ends right after
        try:
            netns.setns(host, flags=0)
            box["fd"] = os.open("/proc/thread-self/net/dev", os.O_RDONLY)
        except BaseException as exc:  # reported in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=enter_and_open, name=f"netdev-{host}")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["fd"]


def tx_bytes(text: str) -> dict[str, int]:
    """Transmitted bytes per interface, from the text of ``/proc/net/dev``."""
    out = {}
    for line in text.splitlines()[2:]:
        name, _, fields = line.partition(":")
        values = fields.split()
        if len(values) >= 9:
            out[name.strip()] = int(values[8])  # 8 receive columns, then transmit bytes
    return out


class LinkLoad:
    """Start with :meth:`start`, end with :meth:`stop`, which returns the samples as rows
    ``{t, link, direction, tx_bytes, planned_bps}`` (``t``: monotonic seconds)."""

    def __init__(self, backend: Any, hz: float = DEFAULT_HZ) -> None:
        if not 1.0 <= hz <= 1000.0:
            raise ValueError(f"link-load sampling rate {hz} Hz: give 1 to 1000")
        self.backend = backend
        self.channels = []  # (label, direction, host, ifname) of each sending end
        for link in backend.links:
            for direction in ("forward", "backward"):
                snd, _ = link.end(direction)
                self.channels.append((link.label, direction, snd.host, snd.ifname))
        self.hz = sampling_hz(hz, len(self.channels))
        self.period = 1.0 / self.hz
        self._fds = {host: _open_net_dev(host) for host in sorted({c[2] for c in self.channels})}
        self.rows: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="link-load")

    def start(self) -> LinkLoad:
        self.sample()  # a first sample before any stage starts
        self._thread.start()
        return self

    def stop(self) -> list[dict]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        try:
            self.sample()  # the last word: counters at the end
        except OSError:  # the namespaces may be gone already
            pass
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        return self.rows

    def sample(self) -> None:
        now, wall = time.monotonic(), time.time()
        counters = {host: tx_bytes(os.pread(fd, 1 << 16, 0).decode()) for host, fd in self._fds.items()}
        plan_t = max(0.0, wall - (self.backend.t0 or wall))
        for label, direction, host, ifname in self.channels:
            sent = counters[host].get(ifname)
            if sent is None:  # the interface is gone (teardown under way)
                continue
            try:
                planned = self.backend.plan.state_at(label, direction, plan_t).rate_bps
            except KeyError:
                planned = None
            self.rows.append(
                {"t": now, "link": label, "direction": direction, "tx_bytes": sent, "planned_bps": planned}
            )

    def _loop(self) -> None:
        deadline = time.monotonic()
        while not self._stop.is_set():
            deadline += self.period
            if self._stop.wait(max(0.0, deadline - time.monotonic())):
                return
            try:
                self.sample()
            except OSError:
                return  # the namespaces went away: the run is over
