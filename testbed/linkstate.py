"""The state one direction of a link is shaped to (no heavy imports: the link-plan applier uses it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LinkState:
    """What one direction of a link is shaped to during a window (base units)."""

    rate_bps: float
    delay_s: float = 0.0
    jitter_s: float = 0.0
    loss_pct: float = 0.0
    up: bool = True  # False during a planned outage (the link's interfaces are set down)
    loss_burst: float = 1.0  # mean length of a loss burst in packets (1: independent random loss)
    reorder: bool = False  # whether jitter may reorder packets (netem's default; pipenem's is not to)
