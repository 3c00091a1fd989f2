"""Measure links: TCP goodput with a real transfer, RTT and loss with UDP echo probes.

The ends (:mod:`testbed.probe_ends`) are started inside the hosts through the backend's
``exec_argv``; :func:`probe` drives them and compares
what was achieved with what the link plan actually applied at that time, and with what
TCP can reach on such a path (:mod:`testbed.tcpmodel`).

RTT and loss: ``ping`` sends ``count`` numbered UDP datagrams at a fixed interval from the
direction's sender; ``echo`` on the other host returns each one and counts what arrived,
so the loss of *this direction* is ``1 − arrived/sent`` (the return path's losses are not
counted), and the RTT crosses both directions (configured: both directions' delays).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

from basics.errors import ConfigError
from testbed.backends.base import Backend
from testbed.probe_ends import ECHO_PORT, PING_INTERVAL, PINGS, PORT
from testbed.tcpmodel import tcp_bound
from testbed.topology import Topology, bottleneck_label

WARMUP = 0.3  # seconds excluded from goodput: slow start and the bucket's first burst


@dataclass
class ProbeResult:
    link: str
    direction: str
    configured_bps: float  # time-weighted rate applied during the measured span
    achieved_bps: float
    seconds: float
    timeline: list[dict] = field(default_factory=list)  # per interval: t, achieved, configured
    rtt_ms_configured: float = 0.0  # both directions' netem delay (jitter's mean is 0)
    rtt_ms_min: float = float("nan")
    rtt_ms_median: float = float("nan")
    rtt_ms_p99: float = float("nan")
    loss_configured: float = 0.0  # percent, this direction
    loss_measured: float = float("nan")  # percent of this direction's probes that did not arrive
    loss_burst_measured: float = 0.0  # mean length of a run of lost probes
    reordered: int = 0  # probes that arrived after a later one
    pings: int = 0
    pings_per_s: float = float("nan")
    tcp_bound_bps: float = float("nan")  # what one TCP flow can reach here (tcp_bound)
    tcp_limit: str = ""  # what sets that bound
    window_bytes: float | None = None  # the receiver's largest TCP receive window

    @property
    def ratio(self) -> float:
        return self.achieved_bps / self.configured_bps if self.configured_bps else float("nan")

    @property
    def tcp_ratio(self) -> float:
        return self.achieved_bps / self.tcp_bound_bps if self.tcp_bound_bps else float("nan")

    def row(self) -> dict:
        return {**asdict(self), "ratio": self.ratio, "tcp_ratio": self.tcp_ratio}


def arrivals(order: list[int], sent: int) -> dict:
    """Loss (percent), mean loss-burst length (packets) and reordered arrivals (a probe that
    arrives after a later-numbered one) of one direction, from the receiver's arrival order."""
    seen = set(order)
    runs, run = [], 0
    for seq in range(sent):
        if seq in seen:
            if run:
                runs.append(run)
            run = 0
        else:
            run += 1
    if run:
        runs.append(run)
    top, reordered = -1, 0
    for seq in order:
        reordered += seq < top
        top = max(top, seq)
    return {
        "loss_measured": 100 * (1 - len(seen) / sent) if sent else float("nan"),
        "loss_burst_measured": sum(runs) / len(runs) if runs else 0.0,
        "reordered": reordered,
    }


# ---------------------------------------------------------------- orchestration


def _state_at(applied: list[dict], link: str, direction: str, t: float) -> dict | None:
    state = None
    for row in applied:
        if row["link"] == link and row["direction"] == direction and row["applied_at"] <= t:
            state = row
    return state


def _rate_at(applied: list[dict], link: str, direction: str, t: float) -> float | None:
    state = _state_at(applied, link, direction, t)
    return state["rate_bps"] if state else None


def path_state(backend: Backend, applied: list[dict], link_index: int, direction: str, t: float) -> tuple[float, float]:
    """(one-way delay in s, loss in percent) of the whole path at wall time t: the link's
    and its shared bottleneck's, added (losses combine as independent)."""
    info = backend.links[link_index]
    labels = [info.label] + ([bottleneck_label(info.bottleneck)] if info.bottleneck else [])
    delay, kept = 0.0, 1.0
    for label in labels:
        s = _state_at(applied, label, direction, t)
        if s:
            delay += s.get("delay_s", 0.0)
            kept *= 1 - s.get("loss_pct", 0.0) / 100
    return delay, (1 - kept) * 100


def path_rate(backend: Backend, applied: list[dict], link_index: int, direction: str, t: float) -> float:
    """Rate of the whole path at wall time t: the link, and its shared bottleneck if any."""
    info = backend.links[link_index]
    rates = [_rate_at(applied, info.label, direction, t)]
    if info.bottleneck:
        rates.append(_rate_at(applied, bottleneck_label(info.bottleneck), direction, t))
    return min(r for r in rates if r is not None)


def latency(
    backend: Backend,
    link_index: int,
    direction: str,
    count: int = PINGS,
    interval: float = PING_INTERVAL,
    port: int = ECHO_PORT,
) -> dict:
    """RTT (min / median / p99, ms), this direction's loss (percent), mean loss-burst length
    and reordered probes from ``count`` UDP probes, next to what the link plan configured."""
    info = backend.links[link_index]
    _, receiver = info.end(direction)
    s_stage, r_stage = (link_index, link_index + 1) if direction == "forward" else (link_index + 1, link_index)
    py = [sys.executable, "-m", "testbed.probe_ends"]
    applied = backend.applied()
    t = time.time()
    other = "backward" if direction == "forward" else "forward"
    d_fwd, loss_cfg = path_state(backend, applied, link_index, direction, t)
    d_back, _ = path_state(backend, applied, link_index, other, t)
    rtt_cfg = (d_fwd + d_back) * 1e3
    wait = max(1.0, 4 * rtt_cfg / 1e3)  # stragglers: a late reply is not a lost one
    echo = subprocess.Popen(
        backend.exec_argv(
            r_stage,
            py + ["echo", "--bind", receiver.address, "--port", str(port)],
        ),
        stdin=subprocess.PIPE,  # closed once the ping is done: that ends the echo
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        if echo.stdout.readline().strip() != "READY":
            raise RuntimeError(f"probe echo on link {info.label} did not start")
        ping = subprocess.run(
            backend.exec_argv(
                s_stage,
                py
                + [
                    "ping",
                    "--to",
                    receiver.address,
                    "--port",
                    str(port),
                    "--count",
                    str(count),
                    "--interval",
                    str(interval),
                    "--wait",
                    str(wait),
                ],
            ),
            timeout=count * interval + wait + 30,
            capture_output=True,
            text=True,
        )
        if ping.returncode != 0:
            raise RuntimeError(f"probe ping on link {info.label} failed: {ping.stderr.strip()[-300:]}")
        # the ping waited ``wait`` for stragglers: what the echo will ever see has arrived
        out = json.loads(echo.communicate(timeout=30)[0].strip().splitlines()[-1])
    finally:
        if echo.poll() is None:
            echo.kill()
            echo.wait()
    res = json.loads(ping.stdout.strip().splitlines()[-1])
    rtts = sorted(res["rtt_ms"])
    q = statistics.quantiles(rtts, n=100, method="inclusive") if len(rtts) >= 2 else rtts * 99
    return {
        "rtt_ms_configured": rtt_cfg,
        "rtt_ms_min": rtts[0] if rtts else float("nan"),
        "rtt_ms_median": statistics.median(rtts) if rtts else float("nan"),
        "rtt_ms_p99": q[98] if q else float("nan"),
        "loss_configured": loss_cfg,
        **arrivals(out["order"], res["sent"]),
        "pings": res["sent"],
        "pings_per_s": res["sent"] / res["send_s"] if res["send_s"] > 0 else float("nan"),
    }


def probe(
    backend: Backend,
    link_index: int,
    direction: str,
    seconds: float = 2.0,
    interval: float = 0.5,
    port: int = PORT,
    pings: int = 0,
) -> ProbeResult:
    """One link in one direction: RTT and loss (``pings`` UDP probes, 0: none), then one real
    TCP transfer, its goodput seen by the receiver and judged against :func:`tcp_bound`."""
    lat = latency(backend, link_index, direction, pings) if pings else {}
    info = backend.links[link_index]
    sender, receiver = info.end(direction)
    s_stage, r_stage = (link_index, link_index + 1) if direction == "forward" else (link_index + 1, link_index)
    py = [sys.executable, "-m", "testbed.probe_ends"]
    recv = subprocess.Popen(
        backend.exec_argv(
            r_stage, py + ["recv", "--bind", receiver.address, "--port", str(port), "--interval", str(interval)]
        ),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        if recv.stdout.readline().strip() != "READY":
            raise RuntimeError(f"probe receiver on link {info.label} did not start")
        send = subprocess.run(
            backend.exec_argv(
                s_stage, py + ["send", "--to", receiver.address, "--port", str(port), "--seconds", str(seconds)]
            ),
            timeout=seconds + 30,
            capture_output=True,
            text=True,
        )
        if send.returncode != 0:
            raise RuntimeError(f"probe sender on link {info.label} failed: {send.stderr.strip()[-300:]}")
        out = json.loads(recv.communicate(timeout=30)[0].strip().splitlines()[-1])
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.wait()
    applied = backend.applied()
    start, bins, iv = out["start"], out["bins"], out["interval"]
    skip = int(round(WARMUP / iv)) if len(bins) > 2 else 0
    full = bins[skip:-1] if len(bins) > skip + 1 else bins  # the last bin is partial
    achieved = sum(full) * 8 / (len(full) * iv) if full else 0.0
    timeline = [
        {
            "t": k * iv,
            "wall": start + k * iv,
            "achieved_bps": b * 8 / iv,
            "configured_bps": path_rate(backend, applied, link_index, direction, start + (k + 0.5) * iv),
        }
        for k, b in enumerate(bins[:-1])
    ]
    measured = timeline[skip:] or timeline
    configured = sum(r["configured_bps"] for r in measured) / len(measured) if measured else float("nan")
    result = ProbeResult(info.label, direction, configured, achieved, len(full) * iv, timeline, **lat)
    result.window_bytes = out.get("window_bytes")
    # the model's RTT: measured where probed (queues and the guest's own latency included), else
    # the plan's; its loss: the plan's (500 probes measure 2% only to ±1.2 points, and
    # √loss is sensitive to that)
    rtt_s = (lat["rtt_ms_median"] if lat else _plan_rtt_ms(backend, applied, link_index, direction, start)) / 1e3
    loss = path_state(backend, applied, link_index, direction, start)[1] / 100
    result.tcp_bound_bps, result.tcp_limit = tcp_bound(configured, rtt_s, loss, result.window_bytes)
    return result


def _plan_rtt_ms(backend: Backend, applied: list[dict], link_index: int, direction: str, t: float) -> float:
    other = "backward" if direction == "forward" else "forward"
    return sum(path_state(backend, applied, link_index, d, t)[0] for d in (direction, other)) * 1e3


def probe_targets(topo: Topology, link: str | None = None, direction: str | None = None) -> list[tuple[int, str]]:
    """(link index, direction) pairs to probe: all, or the one link / direction asked for
    (ConfigError naming --link / --direction otherwise)."""
    if link is not None and link not in {f"{i}-{i + 1}" for i in range(topo.stages - 1)}:
        raise ConfigError(
            "--link", f"{link!r} is not a link of {topo.name} (links are 0-1 .. {topo.stages - 2}-{topo.stages - 1})"
        )
    if direction not in (None, "forward", "backward"):
        raise ConfigError("--direction", "must be forward or backward")
    return [
        (i, d)
        for i in range(topo.stages - 1)
        for d in ("forward", "backward")
        if (link is None or f"{i}-{i + 1}" == link) and (direction is None or d == direction)
    ]


def probe_all(
    backend: Backend,
    seconds: float = 2.0,
    interval: float = 0.5,
    on_result: callable | None = None,
    pings: int = PINGS,
) -> list[ProbeResult]:
    """Every link, both directions, one at a time (so flows don't compete for the CPU)."""
    results = []
    for i in range(len(backend.links)):
        for direction in ("forward", "backward"):
            r = probe(backend, i, direction, seconds, interval, pings=pings)
            results.append(r)
            if on_result:
                on_result(r)
    return results
