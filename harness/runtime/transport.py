"""One torch.distributed process group per pipeline link, bound to that link's addresses.

A 2-rank ``ProcessGroupGloo`` is built directly from a ``TCPStore`` on the link (the
lower stage hosts it) with gloo's device bound to this end's link address, so every
pipeline byte — and the rendezvous — crosses exactly the shaped link: no full mesh,
no routing. Plain ``send``/``recv`` (``batch_isend_irecv`` can hang on gloo).

A payload goes exactly as ``Payload.to_bytes()`` lays it out (the one wire format, see
``harness/compressors/wire.py``), behind a 16-byte frame (two int64: total bytes, header
bytes). It is sent in pieces — frame, header block, each part as it is, each part's
zero padding — so large parts are never copied; the receiver lands them in one buffer
that ``Payload.from_bytes`` reads. ``bytes_sent`` counts every byte handed to gloo
(frame included); ``dense_sent`` the dense size of the tensors those payloads stand for.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import timedelta

import torch
from torch.distributed import ProcessGroupGloo, TCPStore

from harness.compressors.buffers import BufferPool
from harness.compressors.wire import Payload, align, parse_header_block, part_bytes

FWD, BWD = 0, 1  # tags: the two directions of a link never mix
NORM_UP, NORM_DOWN = 2, 3  # the gradient-norm sum up the chain and its total back (control, 8 bytes)
STORE_PORT = 29400


class _Piece:
    """One posted send: gloo's work, the tensor it reads (kept alive until it completed)."""

    __slots__ = ("done", "error", "report", "tensor", "work")

    def __init__(self, work: object, tensor: torch.Tensor, report: tuple | None) -> None:
        self.work, self.tensor, self.report = work, tensor, report
        self.done = threading.Event()
        self.error: BaseException | None = None


class LinkChannel:
    """This stage's end of one link. rank 0 = the lower stage (it hosts the store)."""

    def __init__(self, my_addr: str, peer_addr: str, rank: int, timeout_s: float = 600.0, window: int = 8) -> None:
        timeout = timedelta(seconds=timeout_s)
        host = my_addr if rank == 0 else peer_addr
        self.store = TCPStore(host, STORE_PORT, 2, rank == 0, timeout=timeout, wait_for_workers=False)
        opts = ProcessGroupGloo._Options()
        opts._devices = [ProcessGroupGloo.create_device(hostname=my_addr)]
        opts._timeout = timeout
        self.pg = ProcessGroupGloo(self.store, rank, 2, opts)
        self.peer = 1 - rank
        self.window = window
        self._pending: deque[_Piece] = deque()  # posted, not yet waited for by this stage
        self.bytes_sent = 0
        self.dense_sent = 0
        self.send_wait_s = 0.0
        self._inbox: dict[int, queue.Queue] = {}
        self._closed = False
        self._buffers = BufferPool()  # receive buffers, by size
        self._to_wait: queue.Queue = queue.Queue()  # posted sends, for the one thread that waits on them
        self._waiter: threading.Thread | None = None
        # per tag: when the last payload recv() returned began and ended arriving
        self.arrival: dict[int, tuple[float, float]] = {}

    def _post(self, t: torch.Tensor, tag: int, report: tuple | None = None) -> None:
        piece = _Piece(self.pg.send([t], self.peer, tag), t, report)
        if self._waiter is None:
            self._waiter = threading.Thread(target=self._wait_loop, daemon=True, name="send-wait")
            self._waiter.start()
        self._to_wait.put(piece)
        self._pending.append(piece)
        self.bytes_sent += t.numel() * t.element_size()
        while len(self._pending) > self.window:
            self._wait_oldest()

    def _wait_oldest(self) -> None:
        t0 = time.perf_counter()
        piece = self._pending.popleft()
        piece.done.wait()  # bounded: the waiter's gloo wait times out after the group's timeout
        self.send_wait_s += time.perf_counter() - t0
        if piece.error is not None:
            raise piece.error

    def _wait_loop(self) -> None:
        """The one waiter of every send, in posting order. gloo's send work may be waited on
        once only (a second wait blocks for good), so the window above waits on this thread's
        word, and a send's completion time is known without polling."""
        while True:
            piece = self._to_wait.get()
            try:
                piece.work.wait()
            except BaseException as exc:  # raised where the stage waits for this send
                piece.error = exc
            piece.tensor = None
            piece.done.set()
            if piece.report is not None and piece.error is None:
                t0, on_done = piece.report
                on_done(t0, time.monotonic())

    def send(
        self, payload: Payload, tag: int, dense_bytes: int = 0, on_done: Callable[[float, float], None] | None = None
    ) -> None:
        """Post the payload's sends (asynchronous; at most ``window`` messages in flight).
        ``on_done(t0, t1)``: called (from another thread) once the last part's send completed,
        with the monotonic times it was handed over and it completed."""
        t0 = time.monotonic()
        pieces = [torch.tensor([payload.nbytes, payload.header_bytes], dtype=torch.int64), payload.header_block()]
        for raw in payload.raw_parts():
            pieces.append(raw)
            pad = align(raw.numel()) - raw.numel()
            if pad:
                pieces.append(torch.zeros(pad, dtype=torch.uint8))
        for i, t in enumerate(pieces):
            # pieces complete in order: the last one says when the whole message has left
            self._post(t, tag, (t0, on_done) if on_done is not None and i == len(pieces) - 1 else None)
        self.dense_sent += dense_bytes

    def recv(self, tag: int) -> Payload:
        """The next payload of this direction. A background thread keeps a receive posted at
        all times (gloo moves a message only while its receive is posted), so the link never
        idles while this stage computes, encodes or decodes."""
        if tag not in self._inbox:
            self._inbox[tag] = queue.Queue()
            threading.Thread(target=self._receive_loop, args=(tag,), daemon=True).start()
        item = self._inbox[tag].get()
        if isinstance(item, BaseException):
            raise item
        payload, self.arrival[tag] = item
        return payload

    def _receive_loop(self, tag: int) -> None:
        try:
            frame, work = self._post_frame(tag)
            while not self._closed:
                item, (frame, work) = self._recv_now(tag, frame, work)
                self._inbox[tag].put(item)
        except BaseException as exc:  # handed to the consumer
            if not self._closed:
                self._inbox[tag].put(exc)

    def _post_frame(self, tag: int) -> tuple[torch.Tensor, object]:
        frame = torch.empty(2, dtype=torch.int64)
        return frame, self.pg.recv([frame], self.peer, tag)

    def _recv_now(self, tag: int, frame: torch.Tensor, work: object) -> tuple[tuple, tuple]:
        """One payload, its frame's receive already posted; posts every part's receive at once
        and the next message's frame before waiting for them (gloo matches a tag's receives in
        the order they were posted), so the sender's next message finds its receive waiting
        and the link does not idle between messages."""
        work.wait()
        first = time.monotonic()  # the message's first bytes are here
        total, head = (int(v) for v in frame)
        buf = self._buffers.empty((total,), torch.uint8, "cpu")  # reused once nothing holds the last payload
        self.pg.recv([buf[:head]], self.peer, tag).wait()
        _, specs, off = parse_header_block(buf)
        works = []
        for dtype, numel in specs:
            size = part_bytes(dtype, numel)
            works.append(self.pg.recv([buf[off : off + size]], self.peer, tag))
            if align(size) > size:
                works.append(self.pg.recv([buf[off + size : off + align(size)]], self.peer, tag))
            off += align(size)
        following = self._post_frame(tag)
        for w in works:
            w.wait()
        return (Payload.from_bytes(buf), (first, time.monotonic())), following

    def flush(self) -> None:
        while self._pending:
            self._wait_oldest()

    def close(self) -> None:
        """Wait for our sends. The group is not shut down: a receive thread may still be blocked
        in it, and shutting down under it aborts the process; the worker exits with os._exit."""
        self.flush()
        self._closed = True
