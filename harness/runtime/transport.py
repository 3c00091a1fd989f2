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
from datetime import timedelta

import torch
from torch.distributed import ProcessGroupGloo, TCPStore

from harness.compressors.buffers import BufferPool
from harness.compressors.wire import Payload, align, parse_header_block, part_bytes

FWD, BWD = 0, 1  # tags: the two directions of a link never mix
NORM_UP, NORM_DOWN = 2, 3  # the gradient-norm sum up the chain and its total back (control, 8 bytes)
STORE_PORT = 29400


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
        self._pending: deque = deque()  # (work, tensors kept alive until the send completes)
        self.bytes_sent = 0
        self.dense_sent = 0
        self.send_wait_s = 0.0
        self._inbox: dict[int, queue.Queue] = {}
        self._closed = False
        self._buffers = BufferPool()  # receive buffers, by size

    def _post(self, t: torch.Tensor, tag: int) -> None:
        work = self.pg.send([t], self.peer, tag)
        self._pending.append((work, t))
        self.bytes_sent += t.numel() * t.element_size()
        while len(self._pending) > self.window:
            self._wait_oldest()

    def _wait_oldest(self) -> None:
        t0 = time.perf_counter()
        self._pending.popleft()[0].wait()
        self.send_wait_s += time.perf_counter() - t0

    def send(self, payload: Payload, tag: int, dense_bytes: int = 0) -> None:
        """Post the payload's sends (asynchronous; at most ``window`` messages in flight)."""
        self._post(torch.tensor([payload.nbytes, payload.header_bytes], dtype=torch.int64), tag)
        self._post(payload.header_block(), tag)
        for raw in payload.raw_parts():
            self._post(raw, tag)
            pad = align(raw.numel()) - raw.numel()
            if pad:
                self._post(torch.zeros(pad, dtype=torch.uint8), tag)
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
        return item

    def _receive_loop(self, tag: int) -> None:
        try:
            while not self._closed:
                self._inbox[tag].put(self._recv_now(tag))
        except BaseException as exc:  # handed to the consumer
            if not self._closed:
                self._inbox[tag].put(exc)

    def _recv_now(self, tag: int) -> Payload:
        frame = torch.empty(2, dtype=torch.int64)
        self.pg.recv([frame], self.peer, tag).wait()
        total, head = (int(v) for v in frame)
        buf = self._buffers.empty((total,), torch.uint8, "cpu")  # reused once nothing holds the last payload
        self.pg.recv([buf[:head]], self.peer, tag).wait()
        _, specs, off = parse_header_block(buf)
        for dtype, numel in specs:
            size = part_bytes(dtype, numel)
            self.pg.recv([buf[off : off + size]], self.peer, tag).wait()
            if align(size) > size:
                self.pg.recv([buf[off + size : off + align(size)]], self.peer, tag).wait()
            off += align(size)
        return Payload.from_bytes(buf)

    def flush(self) -> None:
        while self._pending:
            self._wait_oldest()

    def close(self) -> None:
        """Wait for our sends. The group is not shut down: a receive thread may still be blocked
        in it, and shutting down under it aborts the process; the worker exits with os._exit."""
        self.flush()
        self._closed = True
