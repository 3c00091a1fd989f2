"""What one TCP flow can reach on a shaped path with delay and loss (the probe's judge and
the link watch's expectation).

- the shaped rate, in payload: the shaper counts 1514-byte frames, TCP carries 1448 bytes
  of each (timestamps on): ceiling ≈ 0.956 of the rate;
- loss: Mathis, Semke, Mahdavi & Ott (1997), goodput ≈ MSS/RTT · C/√p with C = √(3/2) —
  Reno's steady state under random loss. Linux's CUBIC with SACK recovers faster, so
  measured goodput sits at or above it (measured in the guest: 1.8–2.7× at 2% loss, 60 ms);
  it is a floor to judge against, not a prediction;
- the window: a flow carries at most one receive window per round trip.
"""

from __future__ import annotations

import math

MSS = 1448  # TCP payload per 1514-byte frame (timestamps on)
FRAME_CEILING = MSS / 1514
MATHIS_C = math.sqrt(1.5)


def mathis_bps(rtt_s: float, loss: float) -> float:
    """Mathis et al.'s goodput bound (bit/s) at round trip ``rtt_s`` and loss fraction ``loss``."""
    if loss <= 0 or rtt_s <= 0:
        return math.inf
    return MSS * 8 / rtt_s * MATHIS_C / math.sqrt(loss)


def tcp_bound(rate_bps: float, rtt_s: float, loss: float, window_bytes: float | None) -> tuple[float, str]:
    """What one TCP flow can reach (bit/s) and what limits it: the shaped rate (frames →
    payload), loss (Mathis), or the receive window over the round trip."""
    bounds = [(rate_bps * FRAME_CEILING, "rate"), (mathis_bps(rtt_s, loss), "loss (Mathis: MSS/RTT·1.22/√p)")]
    if window_bytes and rtt_s > 0:
        bounds.append((window_bytes * 8 / rtt_s, "window (receive buffer / RTT)"))
    return min(bounds)
