"""Measure the goodput of links with a real TCP transfer between the two hosts.

``python -m testbed.probe recv|send ...`` are the two ends, started inside the
hosts through the backend's ``exec_argv``; :func:`probe` drives them and compares
the achieved rate with the rate the link plan actually applied at that time.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

from basics.errors import ConfigError
from testbed.backends.base import Backend
from testbed.topology import Topology, bottleneck_label

CHUNK = 256 * 1024
PORT = 5299
WARMUP = 0.3  # seconds excluded from goodput: slow start and the bucket's first burst


@dataclass
class ProbeResult:
    link: str
    direction: str
    configured_bps: float  # time-weighted rate applied during the measured span
    achieved_bps: float
    seconds: float
    timeline: list[dict] = field(default_factory=list)  # per interval: t, achieved, configured

    @property
    def ratio(self) -> float:
        return self.achieved_bps / self.configured_bps if self.configured_bps else float("nan")

    def row(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


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
            }
        ),
        flush=True,
    )


def _send(to: str, port: int, seconds: float) -> None:
    sock = socket.create_connection((to, port), timeout=10)
    payload = b"\0" * CHUNK
    deadline = time.time() + seconds
    while time.time() < deadline:
        sock.sendall(payload)
    sock.shutdown(socket.SHUT_WR)
    sock.recv(1)  # wait until the receiver has read everything and closed
    sock.close()


# ---------------------------------------------------------------- orchestration


def _rate_at(applied: list[dict], link: str, direction: str, t: float) -> float | None:
    rate = None
    for row in applied:
        if row["link"] == link and row["direction"] == direction and row["applied_at"] <= t:
            rate = row["rate_bps"]
    return rate


def path_rate(backend: Backend, applied: list[dict], link_index: int, direction: str, t: float) -> float:
    """Rate of the whole path at wall time t: the link, and its shared bottleneck if any."""
    info = backend.links[link_index]
    rates = [_rate_at(applied, info.label, direction, t)]
    if info.bottleneck:
        rates.append(_rate_at(applied, bottleneck_label(info.bottleneck), direction, t))
    return min(r for r in rates if r is not None)


def probe(
    backend: Backend, link_index: int, direction: str, seconds: float = 2.0, interval: float = 0.5, port: int = PORT
) -> ProbeResult:
    """One real TCP transfer over one link in one direction; goodput seen by the receiver."""
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
    return ProbeResult(info.label, direction, configured, achieved, len(full) * iv, timeline)


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
    backend: Backend, seconds: float = 2.0, interval: float = 0.5, on_result: callable | None = None
) -> list[ProbeResult]:
    """Every link, both directions, one at a time (so flows don't compete for the CPU)."""
    results = []
    for i in range(len(backend.links)):
        for direction in ("forward", "backward"):
            r = probe(backend, i, direction, seconds, interval)
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
    a = ap.parse_args(argv)
    if a.cmd == "recv":
        _recv(a.bind, a.port, a.interval)
    else:
        _send(a.to, a.port, a.seconds)


if __name__ == "__main__":
    main()
