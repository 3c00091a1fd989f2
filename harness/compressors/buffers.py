"""Buffers a boundary keeps, so that encoding and decoding allocate nothing on the hot path.

A fresh multi-MiB tensor costs more than the codec work itself wherever the malloc hands
large blocks back to the kernel (glibc: every block above 32 MiB is a fresh ``mmap``, faulted
in page by page, ~25 ms for a 64 MiB activation on the dev machine). A :class:`BufferPool`
hands out tensors of a shape, dtype and device and takes them back by itself: a buffer is
free again once nothing but the pool refers to its storage (no tensor, view, payload part,
pending send or tensor saved for backward), so a boundary's pool grows to what is in flight
at once (a GPipe step's micro-batches) and then stops growing. A codec asks its context
(``ctx.empty`` / ``ctx.zeros``); a context without a pool allocates as before.
"""

from __future__ import annotations

import threading

import torch


def _in_use(t: torch.Tensor) -> bool:
    """Whether anything besides the pool refers to ``t``'s storage (views and saved tensors too)."""
    # the pool's tensor + the storage object made for the call: 2 when nobody else holds it
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata) > 2


class BufferPool:
    """Reusable tensors by (shape, dtype, device). Thread-safe: a link's receive thread and the
    stage's main thread may share one."""

    def __init__(self) -> None:
        self._free: dict[tuple, list[torch.Tensor]] = {}
        self._lock = threading.Lock()
        self.allocated = 0  # tensors made (not handed out again): what the pool grew to

    def empty(
        self, shape: tuple[int, ...] | torch.Size, dtype: torch.dtype, device: torch.device | str
    ) -> torch.Tensor:
        key = (tuple(shape), dtype, torch.device(device))
        with self._lock:
            pool = self._free.setdefault(key, [])
            for t in pool:
                if not _in_use(t):
                    return t.view(t.shape)
            t = torch.empty(key[0], dtype=dtype, device=key[2])
            pool.append(t)
            self.allocated += 1
            # a view, never the pool's own tensor: Python references to one tensor object do not
            # count as uses of its storage, so a payload holding the pool's object would look free
            return t.view(t.shape)

    def zeros(
        self, shape: tuple[int, ...] | torch.Size, dtype: torch.dtype, device: torch.device | str
    ) -> torch.Tensor:
        return self.empty(shape, dtype, device).zero_()
