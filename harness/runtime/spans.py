"""What a stage did, when: timestamped spans for the pipeline's timeline (``pipenem trace``).

A span is ``(kind, step, micro, direction, t0, t1)`` with times from ``time.monotonic()``:
CLOCK_MONOTONIC, one clock for every process on one kernel — network namespaces and containers
share it — so the stages of a host line up without any synchronisation (a multi-host run would
align hosts by the offset between their monotonic clocks and a common reference, e.g. the
NTP-disciplined wall clock sampled beside it: every stage records one (monotonic, wall) pair).

Kinds: ``fwd`` / ``bwd`` (compute of one micro-batch), ``encode`` / ``decode`` (codec),
``send`` (a payload from being handed to the transport until its last byte was taken by the
kernel), ``recv`` (waiting for a payload), ``arrive`` (a payload's bytes coming in, from its
first to its last: the receive runs in the background, so this is the wire, not a wait;
pipenem's runtime only), ``optim`` (clip + optimizer step), ``norm`` (the
gradient-norm sum up and down the chain). Recording is a tuple appended per span (well under
a microsecond; ``benchmarks/spans.py`` measures it against the step time).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

KINDS = ("fwd", "bwd", "encode", "decode", "send", "recv", "arrive", "optim", "norm")


class Spans:
    def __init__(self) -> None:
        self.rows: list[tuple] = []
        self.clock = {"monotonic": time.monotonic(), "wall": time.time()}  # to put spans on the wall clock

    def add(self, kind: str, step: int, micro: int | None, direction: str | None, t0: float, t1: float) -> None:
        self.rows.append((kind, step, micro, direction, t0, t1))

    @contextmanager
    def span(self, kind: str, step: int, micro: int | None = None, direction: str | None = None) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.rows.append((kind, step, micro, direction, t0, time.monotonic()))

    def as_json(self) -> dict:
        return {"clock": self.clock, "rows": [list(r) for r in self.rows]}


def span_rows(stage: int, doc: dict | None) -> list[dict]:
    """A stage's recorded spans (its ``stage{N}.json``) as table rows."""
    if not doc:
        return []
    keys = ("kind", "step", "micro", "direction", "t0", "t1")
    return [{"stage": stage, **dict(zip(keys, r, strict=True))} for r in doc["rows"]]
