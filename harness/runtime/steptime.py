"""How long a pipeline step takes on links with rate and delay: the schedule's critical path.

Every stage runs its actions (``harness/runtime/pipeline.py``) in order. A forward of
micro-batch m on stage s starts when stage s is free and m's activation has arrived from
s − 1; a backward when its gradient has arrived from s + 1. A message leaves when its action
ends and the link has finished sending the one before it, takes ``bytes × 8 / rate`` on the
link, then ``delay`` more to arrive (netem's one-way delay):

    arrival = max(ready, link free) + bytes × 8 / rate + delay

The step is the makespan of that schedule. With receives posted ahead of their sends
(``transport="preposted"``: NCCL, MPI's eager protocol) delay enters a step once per hop on the
critical path — for GPipe 2 (S − 1) times (forward fill and backward drain) — not once per
message: messages behind the first one are in flight together.

pipenem's runtime sends over gloo (``transport="rendezvous"``, the default here). gloo moves
a send only after its receive is posted *and* the sender has heard so (NOTIFY_RECV_READY,
gloo/transport/tcp/pair.cc): a one-way trip. pipenem's receiver keeps the next message's
16-byte frame receive posted, but can post the header's receive only once the frame is in,
and the parts' only once the header is parsed. Measured in the netem guest at 50 ms: a
message takes 5 one-way delays (frame d, header 2d, parts 2d), and consecutive messages of
one direction leave 4 delays apart. Gradient clipping adds the norm sum: 8 bytes up the chain
and back, 2 (S − 1) more messages per step.

Ignored: codec time, TCP's slow start after idle (a message larger than the initial window
needs more than one round trip after an idle spell), and per-message software overheads.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Literal

from harness.runtime.pipeline import SCHEDULES

Transport = Literal["preposted", "rendezvous"]
WINDOW = 8  # pieces a sender keeps in flight (harness/runtime/transport.py LinkChannel)
PIECES = 3  # frame, header block, one part: a message of one tensor
NORM_BYTES = 8


def step_seconds(
    schedule: str,
    micro: int,
    fwd_s: Sequence[float],
    bwd_s: Sequence[float],
    fwd_bytes: Sequence[float],
    bwd_bytes: Sequence[float],
    rate_bps: Sequence[float],
    delay_s: Sequence[float],
    transport: Transport = "rendezvous",
    norm_sync: bool = False,
) -> float:
    """The makespan of one step. Per stage: ``fwd_s``/``bwd_s`` (one micro-batch's compute);
    per link i → i+1: ``fwd_bytes``/``bwd_bytes`` (one micro-batch's message each way),
    ``rate_bps`` and ``delay_s`` (one-way, the same both ways). ``norm_sync``: gradient
    clipping's norm sum, 8 bytes up the chain and the total back down after the backwards."""
    stages = len(fwd_s)
    if not (len(bwd_s) == stages and len(fwd_bytes) == len(bwd_bytes) == len(rate_bps) == len(delay_s) == stages - 1):
        raise ValueError("per-stage and per-link sequences do not match the number of stages")
    acts = [list(SCHEDULES[schedule](stages, micro, s)) for s in range(stages)]
    free = [0.0] * stages
    chans: dict[tuple[int, str], _Channel] = {}
    arrived: dict[tuple[str, int, int], float] = {}  # (kind, micro, stage) -> when its input is there
    nxt = [0] * stages
    while any(nxt[s] < len(acts[s]) for s in range(stages)):
        moved = False
        for s in range(stages):
            while nxt[s] < len(acts[s]):
                kind, m = acts[s][nxt[s]]
                needs_input = (kind == "F" and s > 0) or (kind == "B" and s < stages - 1)
                if needs_input and (kind, m, s) not in arrived:
                    break
                start = max(free[s], arrived.get((kind, m, s), 0.0))
                end = start + (fwd_s[s] if kind == "F" else bwd_s[s])
                free[s] = end
                nxt[s] += 1
                moved = True
                if kind == "F" and s < stages - 1:
                    ch = chans.setdefault((s, "F"), _Channel(rate_bps[s], delay_s[s], transport))
                    arrived[("F", m, s + 1)], free[s] = ch.send(end, fwd_bytes[s])
                if kind == "B" and s > 0:
                    ch = chans.setdefault((s - 1, "B"), _Channel(rate_bps[s - 1], delay_s[s - 1], transport))
                    arrived[("B", m, s - 1)], free[s] = ch.send(end, bwd_bytes[s - 1])
        if not moved:
            raise RuntimeError(f"schedule {schedule} deadlocks in the model")
    if norm_sync:
        t = free[0]
        for link in range(stages - 1):  # partial sums up
            ch = chans.setdefault((link, "up"), _Channel(rate_bps[link], delay_s[link], transport))
            arrive, free[link] = ch.send(t, NORM_BYTES)
            t = max(arrive, free[link + 1])
        free[stages - 1] = t
        for link in reversed(range(stages - 1)):  # the total down
            ch = chans.setdefault((link, "down"), _Channel(rate_bps[link], delay_s[link], transport))
            arrive, free[link + 1] = ch.send(t, NORM_BYTES)
            t = free[link] = max(arrive, free[link])
    # a step ends when its messages are out (the stages flush their sends)
    for (link, kind), ch in chans.items():
        sender = link if kind in ("F", "up") else link + 1
        free[sender] = max(free[sender], ch.flushed())
    return max(free)


class _Channel:
    """One direction of one link: when its next message can leave and arrives."""

    def __init__(self, rate_bps: float, delay_s: float, transport: Transport, window: int = WINDOW) -> None:
        self.rate, self.delay, self.transport, self.window = rate_bps, delay_s, transport, window
        self.link_free = 0.0  # the link is sending until then
        self.frame_posted = 0.0  # when the receiver posted the next message's first receive
        self.pending: deque[float] = deque()  # when each posted piece's send completes (in order)

    def send(self, ready: float, nbytes: float) -> tuple[float, float]:
        """(when the message has arrived, when the sending stage may go on)."""
        d, wire = self.delay, nbytes * 8 / self.rate
        if self.transport == "preposted":
            leave = max(ready, self.link_free)
            self.link_free = leave + wire
            return self.link_free + d, ready
        # gloo sends a piece only once its receive is posted and the peer has heard so
        # (NOTIFY_RECV_READY, a one-way trip): the frame's receive is posted in advance, the
        # header's once the frame is in, the parts' once the header is parsed; the sender keeps
        # at most `window` pieces in flight and waits for the oldest beyond that
        go = ready
        frame_out = None
        for piece in range(PIECES):
            while len(self.pending) >= self.window:
                go = max(go, self.pending.popleft())
            if piece == 0:
                frame_out = max(go, self.frame_posted + d)
                out = frame_out
            elif piece == 1:
                out = max(go, frame_out + 2 * d)
                header_in = out + d
                self.frame_posted = header_in  # the next frame's receive follows the parts'
            else:
                out = max(go, header_in + d, self.link_free)
                self.link_free = out + wire
                out = self.link_free
            self.pending.append(out)
        return self.link_free + d, go

    def flushed(self) -> float:
        return max(self.pending, default=0.0)
