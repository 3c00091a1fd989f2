"""Spans of a ``runtime: torch`` stage: torch's schedule runs the micro-batches, so its stage and
its point-to-point helpers are wrapped where they compute and wait.

- ``fwd`` / ``bwd``: ``PipelineStage.forward_one_chunk`` / ``backward_one_chunk`` per micro-batch
  (the codec's encode and decode run inside them and are recorded apart by ``CompressedStage``).
- ``send`` / ``recv``: from posting a batch of P2P operations until waiting on it returned;
  torch posts and waits in its own places (1F1B waits on a forward send and a backward receive
  together), so a span ends when *its batch* was waited on — an upper bound of when its bytes
  left or arrived. Micro-batches are counted per step, direction and operation (torch's
  single-stage schedules send and receive them in order).

The wrapped helpers are module functions of ``torch.distributed.pipelining.schedules``: they
are replaced in this stage process only (a stage is a process of its own).
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from typing import Any

from harness.runtime.spans import Spans

_OPS = re.compile(r"(fwd|bwd)_(send|recv)")
_DIRECTION = {"fwd": "forward", "bwd": "backward"}


class TorchSpans:
    def __init__(self, spans: Spans) -> None:
        self.spans, self.step = spans, 0
        self._micro: dict[tuple[str, str], int] = defaultdict(int)
        self._posted: dict[int, tuple[float, list[tuple[str, str, int]]]] = {}  # id(works) -> (t0, ops)

    def new_step(self, step: int) -> None:
        self.step = step
        self._micro.clear()

    def instrument(self, pp_stage: Any) -> None:
        from torch.distributed.pipelining import schedules

        def timed(kind: str, chunk: Any) -> Any:
            def run(chunk_id: int, *args: Any, **kwargs: Any) -> Any:
                t0 = time.monotonic()
                try:
                    return chunk(chunk_id, *args, **kwargs)
                finally:
                    self.spans.add(kind, self.step, chunk_id, None, t0, time.monotonic())

            return run

        pp_stage.forward_one_chunk = timed("fwd", pp_stage.forward_one_chunk)
        pp_stage.backward_one_chunk = timed("bwd", pp_stage.backward_one_chunk)
        batch, wait = schedules._batch_p2p, schedules._wait_batch_p2p

        def _batch_p2p(p2p_ops: list, desc: str | None = None) -> list:
            works = batch(p2p_ops, desc=desc)
            ops = []
            for d, op in _OPS.findall(desc or ""):
                ops.append((_DIRECTION[d], op, self._micro[(d, op)]))
                self._micro[(d, op)] += 1
            self._posted[id(works)] = (time.monotonic(), ops)
            return works

        def _wait_batch_p2p(work: list) -> None:
            try:
                wait(work)
            finally:
                t0, ops = self._posted.pop(id(work), (None, []))
                if t0 is not None:
                    t1 = time.monotonic()
                    for direction, op, micro in ops:
                        self.spans.add(op, self.step, micro, direction, t0, t1)

        schedules._batch_p2p, schedules._wait_batch_p2p = _batch_p2p, _wait_batch_p2p
