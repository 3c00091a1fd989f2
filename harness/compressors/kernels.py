"""Compiled CPU kernels for codec hot paths (numba), where numpy needs one pass per operation.

Quantization in numpy took six passes over the tensor (subtract, scale, round, clip, cast,
pack) and its decode four: 6-11× the memory floor; one fused loop per direction runs at
~2-3×. TopK's kernels (``lane_kernels.py``: an exact, sort-free selection, and compaction and
expansion 8 entries at a time, :mod:`simd`) run at ~3× where numpy's partition, compress and
place ran at 13-15×; error feedback's carried error over TopK's bitmask is one branch-free
pass (``benchmarks/compressors.py``; the README says what bounds each).

The kernels give the same bytes and values as the torch/numpy path they replace (IEEE
float32 arithmetic, ``rint`` = round half to even; decode's ``lo + code·step`` fused into
one FMA as ``torch.addcmul`` computes it), which ``tests/test_kernels.py`` checks bit for
bit. One stated exception: a column whose minimum is a zero held with both signs gets the
sign of its first zero as offset (torch's min does not say which it returns); the codes and
every decoded value are the same either way.

numba is imported and a kernel compiled on first use (~0.5 s; ``cache=True`` keeps the
machine code on disk for the next process), so a run that takes no compiled path pays
nothing. Kernels release the GIL (``nogil``) and start no threads (no ``parallel``): a stage
worker forked from the fork server after a kernel was compiled inherits it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from types import ModuleType

import numpy as np

from harness.compressors.jit import njit


@cache
def column_min_max() -> Callable:
    """``(g (b, n, d) f32, lo (b, d) f32, hi (b, d) f32) -> bool``: per instance column min and
    max, one pass; False (lo/hi undefined) where a column holds a NaN (the caller falls back to
    torch, whose min/max propagate it). ``np.minimum``/``np.maximum`` because LLVM turns them
    into vector min/max (Python's ``min`` or a NaN flag kept in the loop stayed scalar on AVX2:
    16.5 ms against 4.8 on the benchmark's tensor); they propagate a NaN, so one look at lo and
    hi afterwards finds it. Of two equal zeros the first is kept."""

    @njit()(nogil=True, boundscheck=False, cache=True)
    def kernel(g, lo, hi):
        b, n, d = g.shape
        for i in range(b):
            low, high = lo[i], hi[i]
            low[:] = g[i, 0]
            high[:] = g[i, 0]
            for j in range(1, n):
                row = g[i, j]
                for k in range(d):
                    low[k] = np.minimum(low[k], row[k])
                    high[k] = np.maximum(high[k], row[k])
        for i in range(b):
            for k in range(d):
                if lo[i, k] != lo[i, k] or hi[i, k] != hi[i, k]:
                    return False
        return True

    return kernel


@cache
def quantize_encode(bits: int) -> Callable:
    """``(g (b, n, d) f32, lo (b, d), inv (b, d), out (b·n·d·bits/8,) u8)``: each entry's code
    clip(rint((x − lo)·inv), 0, 2^bits − 1), packed 8/bits to a byte, the first in the low bits
    (:func:`harness.compressors.quantize.pack_codes`' layout). Needs d % (8/bits) == 0."""
    per, top = 8 // bits, np.float32((1 << bits) - 1)
    zero = np.float32(0)

    @njit()(nogil=True, boundscheck=False, cache=True)
    def kernel(g, lo, inv, out):
        b, n, d = g.shape
        w = d // per
        for i in range(b):
            low, scale = lo[i], inv[i]
            for j in range(n):
                row = g[i, j]
                o = out[(i * n + j) * w : (i * n + j + 1) * w]
                for p in range(w):
                    acc = 0
                    for q in range(per):
                        k = p * per + q
                        c = min(max(np.rint((row[k] - low[k]) * scale[k]), zero), top)
                        acc |= np.int32(c) << (q * bits)
                    o[p] = acc

    return kernel


@cache
def quantize_decode(bits: int) -> Callable:
    """``(packed u8, lo (b, d), step (b, d), out (b, n, d) f32)``: lo + code·step per entry, as
    one FMA (``fastmath={"contract"}`` lets LLVM fuse it, as ``torch.addcmul`` is fused).
    2 and 4 bits: a row's bytes are first spread to one code per byte, a 32-bit (16-bit) word
    from each byte (vector shifts, where a loop over each byte's codes stayed scalar: 2 bits
    7.9 ms against 11.8), then converted."""
    per = 8 // bits

    @njit()(nogil=True, boundscheck=False, cache=True, fastmath={"contract"})
    def kernel(packed, lo, step, out):
        b, n, d = out.shape
        w = d // per
        codes = np.empty((d + 3) // 4 * 4, np.uint8)  # whole words (8 bits: any d; codes unused)
        wide = codes.view(np.uint32) if per == 4 else codes.view(np.uint16)
        for i in range(b):
            low, size = lo[i], step[i]
            for j in range(n):
                o = out[i, j]
                pk = packed[(i * n + j) * w : (i * n + j + 1) * w]
                if per == 1:
                    for k in range(d):
                        o[k] = low[k] + np.float32(pk[k]) * size[k]
                    continue
                for p in range(w):  # code q of the byte to byte q of the word (little-endian)
                    byte = np.uint32(pk[p])
                    if per == 2:
                        wide[p] = (byte & 0xF) | ((byte & 0xF0) << 4)
                    else:
                        wide[p] = (byte & 3) | ((byte & 0xC) << 6) | ((byte & 0x30) << 12) | ((byte & 0xC0) << 18)
                for k in range(d):
                    o[k] = low[k] + np.float32(codes[k]) * size[k]

    return kernel


SAMPLE = 1024  # magnitudes TopK samples per row to bracket its threshold (lane_kernels.py)
HIST = 2048  # bins of the bracket's histogram (the k-th magnitude's bin is then a few entries)


def lanes() -> ModuleType:
    """The kernels built on :mod:`simd`'s 8-lane blocks (``lane_kernels.py``: topk's selection,
    compaction and expansion, randk's, EF's fused paths, sketch's per-chunk top-s, column's
    streamed decode), imported on first use. They call numba intrinsics and each other, so they
    live at module level there: numba keys a closure's disk-cache entry by its pickled free
    variables, and a captured dispatcher or intrinsic pickles differently in every process (such
    a closure was compiled anew, ~2 s, in every process)."""
    import harness.compressors.lane_kernels as lane_kernels  # numba: imported on first use

    return lane_kernels


@cache
def permutation_prefix() -> Callable:
    """``(draws (k,) u32, order (n,) i32, kept (n,) bool, pos (k,) i64)``: the first k entries of
    the forward Fisher–Yates shuffle of 0 … n−1 that ``torch.randperm`` (CPU, n < 2³²/20) makes
    from its generator's 32-bit draws (entry i swapped with entry i + draw_i mod (n − i)),
    sorted, into ``pos``. Entry i is final after step i, so k steps suffice, not n."""

    @njit()(nogil=True, boundscheck=False, cache=True)
    def kernel(draws, order, kept, pos):
        n, k = order.size, pos.size
        for i in range(n):
            order[i] = i
            kept[i] = False
        for i in range(k):
            z = i + np.int64(draws[i]) % (n - i)
            order[i], order[z] = order[z], order[i]
            kept[order[i]] = True
        j = 0
        for i in range(n):  # the kept positions in order: no sort
            if kept[i]:
                pos[j] = i
                j += 1

    return kernel


@cache
def scatter_columns() -> Callable:
    """``(vals (b, n, k), idx (b, k) i64, out (b, n, d))``: out = 0 except out[i, :, idx[i]] =
    vals[i]: column masking's decode where its output is not 32-byte aligned (elsewhere
    ``lane_kernels.scatter_columns`` streams each row out). Row by row, so each row is zeroed and
    filled while it is in cache (6-7 ms where torch's per-instance zero + scatter took 7.3 on
    the benchmark's tensor)."""

    @njit()(nogil=True, boundscheck=False, cache=True)
    def kernel(vals, idx, out):
        b, n, _ = out.shape
        k = idx.shape[1]
        for i in range(b):
            cols = idx[i]
            for j in range(n):
                o, v = out[i, j], vals[i, j]
                o[:] = 0
                for t in range(k):
                    o[cols[t]] = v[t]

    return kernel


@cache
def column_norms() -> Callable:
    """``(g (n, d) f32, out (d,) f32)``: each column's sum of squares, summed over the rows in
    order (one vectorised pass; the same sums numpy's ``einsum("nd,nd->d")`` gives, 4.2 ms
    where it took 6.2 on the benchmark's tensor)."""

    @njit()(nogil=True, boundscheck=False, cache=True)
    def kernel(g, out):
        n, d = g.shape
        out[:] = 0
        for j in range(n):
            row = g[j]
            for k in range(d):
                out[k] += row[k] * row[k]

    return kernel


@cache
def gather_columns() -> Callable:
    """``(g (b, n, d), idx (b, k) i64, vals (b, n, k))``: vals[i] = g[i, :, idx[i]], row by row:
    column masking's kept values (and randk's, as one instance)."""

    @njit()(nogil=True, boundscheck=False, cache=True)
    def kernel(g, idx, vals):
        b, n, _ = g.shape
        k = idx.shape[1]
        for i in range(b):
            cols = idx[i]
            for j in range(n):
                row, v = g[i, j], vals[i, j]
                for t in range(k):
                    v[t] = row[cols[t]]

    return kernel
