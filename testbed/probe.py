"""Measure links: TCP goodput with a real transfer, RTT and loss with UDP echo probes.

``python -m testbed.probe recv|send|echo|ping ...`` are the ends, started inside the
hosts through the backend's ``exec_argv``; :func:`probe` drives them and compares
what was achieved with what the link plan actually applied at that time, and with what
TCP can reach on such a path (:mod:`testbed.tcpmodel`).

RTT and loss: ``ping`` sends ``count`` numbered UDP datagrams at a fixed interval from the
direction's sender; ``echo`` on the other host returns each one and counts what arrived,
so the loss of *this direction* is ``1 − arrived/sent`` (the return path's losses are not
counted), and the RTT crosses both directions (configured: both directions' delays).
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import statistics
import struct
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

from basics.errors import ConfigError
from testbed.backends.base import Backend
from testbed.tcpmodel import tcp_bound
from testbed.topology import Topology, bottleneck_label

CHUNK = 256 * 1024
PORT = 5299
ECHO_PORT = 5298
WARMUP = 0.3  # seconds excluded from goodput: slow start and the bucket's first burst
PINGS = 500  # UDP probes per direction: a loss rate to about ±2.7 points (95%) at 10%
PING_INTERVAL = 0.01  # s; wider than most jitter, so probes rarely queue behind each other


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


# ---------------------------------------------------------------- the two ends


def _recv(bind: str, port: int, interval: float) -> None:
    srv = socket.create_server((bind, port), reuse_port=False)
    print("READY", flush=True)
    conn, _ = srv.accept()
    bins: dict[int, int] = {}
    start = None
    total = 0
    buf = bytearray(CHUNK)
    while True:
        n = conn.recv_into(buf)
        if n == 0:
            break
        now = time.time()
        if start is None:
            start = now
        total += n
        k = int((now - start) / interval)
        bins[k] = bins.get(k, 0) + n
    end = time.time()
    print(
        json.dumps(
            {
                "start": start,
                "end": end,
                "bytes": total,
                "interval": interval,
                "bins": [bins.get(k, 0) for k in range(max(bins, default=-1) + 1)],
                "window_bytes": receive_window(),
            }
        ),
        flush=True,
    )


def receive_window() -> float | None:
    """The largest receive window this host's TCP advertises (bytes): tcp_rmem's max, less
    the share tcp_adv_win_scale keeps for overhead (per network namespace)."""
    try:
        rmem = int(open("/proc/sys/net/ipv4/tcp_rmem").read().split()[2])
        scale = int(open("/proc/sys/net/ipv4/tcp_adv_win_scale").read())
    except (OSError, ValueError, IndexError):
        return None
    return rmem - rmem / 2**scale if scale > 0 else rmem / 2 ** (-scale)


HEADER = struct.Struct("!Id")  # sequence number, send time
PAD = 64  # bytes per probe datagram
ECHO_BUFFER = 8 << 20
SO_RCVBUFFORCE = 33  # Linux; Python does not name it


def _echo(bind: str, port: int, idle: float, first: float) -> None:
    """Return every datagram to its sender; record what arrived; stop after ``idle`` s of
    silence (``first`` s before the first datagram: a link that loses everything ends too)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # a burst of probes must not overflow our own receive buffer (that would count as the
    # link's loss): 8 MiB, past rmem_max where we may (root)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, ECHO_BUFFER)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, ECHO_BUFFER)
    sock.bind((bind, port))
    print("READY", flush=True)
    order: list[int] = []  # sequence numbers in arrival order
    while select.select([sock], [], [], idle if order else first)[0]:
        data, peer = sock.recvfrom(2048)
        if len(data) >= HEADER.size:
            order.append(HEADER.unpack_from(data)[0])
            sock.sendto(data, peer)
    print(json.dumps({"order": order}), flush=True)


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


def _ping(to: str, port: int, count: int, interval: float, wait: float) -> None:
    """``count`` probes at ``interval``; RTT of each one returned (ms)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((to, port))
    rtts: dict[int, float] = {}
    start = time.monotonic()
    sent = 0
    deadline = None
    while True:
        now = time.monotonic()
        if sent < count and now >= start + sent * interval:
            sock.send(HEADER.pack(sent, now).ljust(PAD, b"\0"))
            sent += 1
            if sent == count:
                deadline, last_send = now + wait, now
            continue
        if deadline is not None and (now >= deadline or len(rtts) == count):
            break
        until = start + sent * interval if sent < count else deadline
        if select.select([sock], [], [], max(until - now, 0))[0]:
            try:
                data = sock.recv(2048)
            except ConnectionRefusedError:  # an ICMP error for an earlier probe: it counts as lost
                continue
            seq, t_sent = HEADER.unpack_from(data)
            rtts.setdefault(seq, (time.monotonic() - t_sent) * 1e3)
    print(json.dumps({"sent": sent, "send_s": last_send - start, "rtt_ms": list(rtts.values())}), flush=True)


def _send(to: str, port: int, seconds: float) -> None:
    sock = socket.create_connection((to, port), timeout=10)
    # a lossy link's retransmission back-off can hold one write for seconds; the caller bounds
    # the whole transfer (seconds + 30)
    sock.settimeout(seconds + 20)
    payload = b"\0" * CHUNK
    deadline = time.time() + seconds
    while time.time() < deadline:
        sock.sendall(payload)
    sock.shutdown(socket.SHUT_WR)
    sock.recv(1)  # wait until the receiver has read everything and closed
    sock.close()


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
    py = [sys.executable, "-m", "testbed.probe"]
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
            py
            + ["echo", "--bind", receiver.address, "--port", str(port), "--idle", str(wait + 1.0)]
            + ["--first", str(count * interval + wait + 5.0)],
        ),
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
        out = json.loads(echo.communicate(timeout=wait + 30)[0].strip().splitlines()[-1])
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
    py = [sys.executable, "-m", "testbed.probe"]
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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m testbed.probe")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("recv")
    r.add_argument("--bind", required=True)
    r.add_argument("--port", type=int, default=PORT)
    r.add_argument("--interval", type=float, default=0.5)
    s = sub.add_parser("send")
    s.add_argument("--to", required=True)
    s.add_argument("--port", type=int, default=PORT)
    s.add_argument("--seconds", type=float, default=2.0)
    e = sub.add_parser("echo")
    e.add_argument("--bind", required=True)
    e.add_argument("--port", type=int, default=ECHO_PORT)
    e.add_argument("--idle", type=float, default=2.0)
    e.add_argument("--first", type=float, default=30.0)
    p = sub.add_parser("ping")
    p.add_argument("--to", required=True)
    p.add_argument("--port", type=int, default=ECHO_PORT)
    p.add_argument("--count", type=int, default=PINGS)
    p.add_argument("--interval", type=float, default=PING_INTERVAL)
    p.add_argument("--wait", type=float, default=1.0)
    a = ap.parse_args(argv)
    if a.cmd == "recv":
        _recv(a.bind, a.port, a.interval)
    elif a.cmd == "send":
        _send(a.to, a.port, a.seconds)
    elif a.cmd == "echo":
        _echo(a.bind, a.port, a.idle, a.first)
    else:
        _ping(a.to, a.port, a.count, a.interval, a.wait)


if __name__ == "__main__":
    main()
