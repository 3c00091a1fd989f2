"""Figures from a run's timeline: where stages waited, and how busy the slow link was.

Inputs are the run's span rows (``harness/runtime/spans.py``: stage, kind, step, micro,
direction, t0, t1 on CLOCK_MONOTONIC) and link-load samples (``testbed/linkload.py``: t,
link, direction, cumulative tx_bytes of the sending end, planned_bps), both on one clock.
Step 0 is the warm-up step (allocations, first-touch pages, TCP slow start) and is left out,
as the throughput figure leaves it out.

- **Bubble fraction** of a stage in a step: 1 − (time it computed or coded) / (the step's
  window, from the first compute or codec span of any stage in that step to the last). "Computed or coded"
  is the union of its fwd, bwd, encode, decode and optim spans; everything else — waiting
  for a payload, for a send window, for the gradient-norm sum — is bubble. The ideal of
  GPipe and 1F1B with equal stages and no communication cost is (p−1)/(m+p−1).
- **Link utilisation while data waited to cross it**: for each message on the link, the
  interval from the sender handing it over to its last byte arriving at the receiver
  (pipenem's runtime records arrival; torch's runtime gives the later of the send's
  completion and the receive's end); the interface bytes the sender's end put on the wire
  from the first message's start to the last one's end (ACKs and control messages in
  between are a few percent), over what the planned rate allows in the union of those
  intervals.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import numpy as np

BUSY = ("fwd", "bwd", "encode", "decode", "optim")


def ideal_bubble(stages: int, micro_batches: int) -> float:
    """GPipe's and 1F1B's bubble with equal stages and free communication: (p−1)/(m+p−1)."""
    return (stages - 1) / (micro_batches + stages - 1)


def _union_length(intervals: list[tuple[float, float]], lo: float, hi: float) -> float:
    return sum(max(0.0, min(b, hi) - max(a, lo)) for a, b in _merge(intervals))


def _merge(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def bubble(spans: list[dict], stages: int) -> dict[int, float]:
    """Mean bubble fraction per stage over the steady steps (every step but the first that
    all stages recorded); {} when there are none."""
    by_step: dict[int, list[dict]] = defaultdict(list)
    for s in spans:
        by_step[s["step"]].append(s)
    steady = [k for k in sorted(by_step) if k > min(by_step) and {s["stage"] for s in by_step[k]} >= set(range(stages))]
    fractions: dict[int, list[float]] = defaultdict(list)
    for k in steady:
        rows = by_step[k]
        work = [s for s in rows if s["kind"] in BUSY]  # waits that began in the step before do not count
        if not work:
            continue
        lo, hi = min(s["t0"] for s in work), max(s["t1"] for s in work)
        if hi <= lo:
            continue
        for stage in range(stages):
            busy = [(s["t0"], s["t1"]) for s in rows if s["stage"] == stage and s["kind"] in BUSY]
            fractions[stage].append(1.0 - _union_length(busy, lo, hi) / (hi - lo))
    return {stage: float(np.mean(v)) for stage, v in fractions.items()}


def message_intervals(spans: list[dict], link: str, direction: str) -> list[tuple[float, float]]:
    """When the messages of one link and direction were on their way (steady steps only)."""
    lo_stage, hi_stage = (int(v) for v in link.split("-"))
    sender, receiver = (lo_stage, hi_stage) if direction == "forward" else (hi_stage, lo_stage)
    first = min((s["step"] for s in spans), default=0)
    sent, ends = {}, defaultdict(list)
    for s in spans:
        if s["direction"] != direction or s["step"] == first:
            continue
        key = (s["step"], s["micro"])
        if s["stage"] == sender and s["kind"] == "send":
            sent[key] = (s["t0"], s["t1"])
        elif s["stage"] == receiver and s["kind"] in ("arrive", "recv"):
            ends[key].append((s["kind"], s["t1"]))
    out = []
    for key, (t0, t1) in sent.items():
        got = dict(ends.get(key, []))
        end = got["arrive"] if "arrive" in got else max(t1, got.get("recv", t1))
        out.append((t0, end))
    return out


def utilisation(spans: list[dict], load: list[dict], link: str, direction: str) -> float | None:
    """Wire bytes / planned bytes over the time this link and direction had data waiting to
    cross; None without samples or messages."""
    mine = (r for r in load if r["link"] == link and r["direction"] == direction)
    samples = sorted((r["t"], r["tx_bytes"], r["planned_bps"]) for r in mine)
    busy = _merge(message_intervals(spans, link, direction))
    if len(samples) < 2 or not busy:
        return None
    t = np.array([s[0] for s in samples])
    tx = np.array([s[1] for s in samples], dtype=float)
    rate = np.array([s[2] for s in samples], dtype=float)
    planned = np.concatenate([[0.0], np.cumsum(rate[:-1] * np.diff(t))])  # bits the plan allowed, up to each sample
    busy = [(max(a, t[0]), min(b, t[-1])) for a, b in busy if min(b, t[-1]) > max(a, t[0])]
    if not busy:
        return None
    # bytes over the whole steady stretch (the counters are sampled every ~40 ms, coarser than a
    # small message: per-interval increments would smear); between messages only ACKs and
    # control messages cross, a few percent at most
    wire = (np.interp(busy[-1][1], t, tx) - np.interp(busy[0][0], t, tx)) * 8
    allowed = sum(np.interp(b, t, planned) - np.interp(a, t, planned) for a, b in busy)
    return float(wire / allowed) if allowed > 0 else None


def slowest_link(load: list[dict]) -> str | None:
    """The link with the lowest mean planned rate (either direction)."""
    rates: dict[str, list[float]] = defaultdict(list)
    for r in load:
        rates[r["link"]].append(r["planned_bps"])
    return min(rates, key=lambda k: (np.mean(rates[k]), k)) if rates else None


def trial_figures(spans: list[dict], load: list[dict], stages: int, micro_batches: int, mode: str) -> dict[str, Any]:
    """The timeline columns of a trial row (harness/results/schema.py)."""
    per_stage = bubble(spans, stages)
    slow = slowest_link(load)

    def util(direction: str) -> float | None:
        return utilisation(spans, load, slow, direction) if slow else None

    return {
        "bubble_fraction": float(np.mean(list(per_stage.values()))) if per_stage else None,
        "bubble_by_stage": json.dumps([round(per_stage[s], 4) for s in sorted(per_stage)]) if per_stage else None,
        "bubble_ideal": ideal_bubble(stages, micro_batches) if per_stage else None,
        "slow_link": slow,
        "slow_link_util_fwd": util("forward"),
        "slow_link_util_bwd": util("backward") if mode == "train" else None,
    }
