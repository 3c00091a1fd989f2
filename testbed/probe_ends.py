"""The two ends of a link probe, started inside the hosts: ``python -m testbed.probe_ends
recv|send|echo|ping ...`` (:mod:`testbed.probe` drives them and judges what they measured).

``recv``/``send``: one TCP transfer, the receiver's bytes per interval. ``echo``/``ping``:
numbered UDP datagrams at a fixed interval, returned by the echo, which records their arrival
order (this direction's loss, bursts, reordering); the sender records each round trip.

Standard library only, as :mod:`testbed.nsenter`: with the backends' imports (pyroute2, numpy,
scipy) an end took ~14 s to start in the user-mode Linux guest.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import struct
import sys
import time

CHUNK = 256 * 1024
PORT = 5299
ECHO_PORT = 5298
PINGS = 500  # UDP probes per direction: a loss rate to about ±2.7 points (95%) at 10%
PING_INTERVAL = 0.01  # s; wider than most jitter, so probes rarely queue behind each other


HEADER = struct.Struct("!Id")  # sequence number, send time
PAD = 64  # bytes per probe datagram
ECHO_BUFFER = 8 << 20
SO_RCVBUFFORCE = 33  # Linux; Python does not name it


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


def _echo(bind: str, port: int) -> None:
    """Return every datagram to its sender and record what arrived, until stdin closes: the
    driver closes it once the sender is done (or dies, which closes it too). A timer of its own
    would race the sender's start-up, which takes seconds in the user-mode Linux guest."""
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
    while True:
        ready = select.select([sock, sys.stdin], [], [])[0]
        if sock in ready:
            data, peer = sock.recvfrom(2048)
            if len(data) >= HEADER.size:
                order.append(HEADER.unpack_from(data)[0])
                sock.sendto(data, peer)
        elif not sys.stdin.buffer.read1(4096):  # EOF: the sender is done
            break
    print(json.dumps({"order": order}), flush=True)


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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m testbed.probe_ends")
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
        _echo(a.bind, a.port)
    else:
        _ping(a.to, a.port, a.count, a.interval, a.wait)


if __name__ == "__main__":
    main()
