"""Compiled CPU kernels for codec hot paths (numba), where numpy needs one pass per operation.

Quantization in numpy took six passes over the tensor (subtract, scale, round, clip, cast,
pack) and its decode four: 6-11× the memory floor; one fused loop per direction runs at
~2.2×. TopK's exact selection (a sampled bracket, one counting pass, a quickselect among
the few entries left) and its decode from the bitmask run at ~8× where numpy's partition,
compress and place ran at 13-15×; error feedback's carried error over TopK's bitmask is one
branch-free pass (``benchmarks/compressors.py``; the README says what bounds each).

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

import numpy as np


def _njit():
    """numba's ``njit``, caching machine code on disk where numba finds a writable place (next
    to this file, else the user's cache folder); where it finds none (a read-only mount in a
    container, no home) the kernel is compiled in memory instead of failing."""
    import numba

    def jit(**opts):
        def wrap(fn):
            try:
                return numba.njit(**opts)(fn)
            except RuntimeError:  # "cannot cache function …: no locator available"
                return numba.njit(**{**opts, "cache": False})(fn)

        return wrap

    return jit


@cache
def column_min_max() -> Callable:
    """``(g (b, n, d) f32, lo (b, d) f32, hi (b, d) f32) -> bool``: per instance column min and
    max, one pass; False (lo/hi undefined) where a column holds a NaN (the caller falls back to
    torch, whose min/max propagate it)."""

    @_njit()(nogil=True, boundscheck=False, cache=True)
    def kernel(g, lo, hi):
        b, n, d = g.shape
        ok = True
        for i in range(b):
            low, high = lo[i], hi[i]
            low[:] = g[i, 0]
            high[:] = g[i, 0]
            for j in range(n):
                row = g[i, j]
                for k in range(d):
                    low[k] = min(low[k], row[k])
                    high[k] = max(high[k], row[k])
                    ok &= row[k] == row[k]
        return ok

    return kernel


@cache
def quantize_encode(bits: int) -> Callable:
    """``(g (b, n, d) f32, lo (b, d), inv (b, d), out (b·n·d·bits/8,) u8)``: each entry's code
    clip(rint((x − lo)·inv), 0, 2^bits − 1), packed 8/bits to a byte, the first in the low bits
    (:func:`harness.compressors.quantize.pack_codes`' layout). Needs d % (8/bits) == 0."""
    per, top = 8 // bits, np.float32((1 << bits) - 1)
    zero = np.float32(0)

    @_njit()(nogil=True, boundscheck=False, cache=True)
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
    one FMA (``fastmath={"contract"}`` lets LLVM fuse it, as ``torch.addcmul`` is fused)."""
    per, mask = 8 // bits, (1 << bits) - 1

    @_njit()(nogil=True, boundscheck=False, cache=True, fastmath={"contract"})
    def kernel(packed, lo, step, out):
        b, n, d = out.shape
        w = d // per
        for i in range(b):
            low, size = lo[i], step[i]
            for j in range(n):
                o = out[i, j]
                pk = packed[(i * n + j) * w : (i * n + j + 1) * w]
                for p in range(w):
                    byte = np.int32(pk[p])
                    for q in range(per):
                        k = p * per + q
                        o[k] = low[k] + np.float32((byte >> (q * bits)) & mask) * size[k]

    return kernel


_ABS = np.uint32(0x7FFFFFFF)  # an fp32's bits without the sign: ordered as the magnitudes are
_INF = np.uint32(0x7F800000)  # above it: NaN
SAMPLE = 1024  # magnitudes sampled per row to bracket the threshold
CANDIDATES = 1 << 14  # entries the narrowed bracket may hold (more: the row takes numpy's path)
_LOWEST_BIT = np.array([0] + [(b & -b).bit_length() - 1 for b in range(1, 256)], np.uint8)


@cache
def _select() -> Callable:
    @_njit()(nogil=True, boundscheck=False, cache=True)
    def kernel(c, kth):
        """In place: c[kth] becomes what a sort would put there (Hoare quickselect)."""
        lo, hi = 0, c.size - 1
        while hi > lo:
            x, y, z = c[lo], c[(lo + hi) >> 1], c[hi]
            pivot = max(min(x, y), min(max(x, y), z))
            i, j = lo, hi
            while i <= j:
                while c[i] < pivot:
                    i += 1
                while c[j] > pivot:
                    j -= 1
                if i <= j:
                    c[i], c[j] = c[j], c[i]
                    i += 1
                    j -= 1
            if kth <= j:
                hi = j
            elif kth >= i:
                lo = i
            else:
                break
        return c[kth]

    return kernel


@cache
def top_row() -> Callable:
    """``(f (n,) f32, k, mask (n,) bool, vals (k + 1,) f32, sample (SAMPLE,) u32, cand
    (CANDIDATES,) u32) -> bool``: the k entries of largest magnitude of one row, as TopK's mask
    and kept values (in position order; vals has one slack slot). The threshold is found without
    a sort: a strided sample brackets it, one counting pass over nine thresholds inside the
    bracket narrows it eightfold and counts what lies above, one pass collects the entries
    inside, and a quickselect among those gives the exact k-th magnitude. False (nothing
    decided) where the row holds a NaN, more entries tie at the threshold than are kept (the
    tie rule is the numpy path's), or the sample's bracket missed: the caller does that row."""
    select = _select()

    @_njit()(nogil=True, boundscheck=False, cache=True)
    def kernel(f, k, mask, vals, sample, cand):
        n = f.size
        a = f.view(np.uint32)
        s = sample.size
        stride = n // s
        for i in range(s):
            sample[i] = a[i * stride] & _ABS
        want = s - (k * s) // n  # the threshold's rank in the sample, ± 4 standard deviations
        margin = int(4.0 * np.sqrt(k * s / n * (1.0 - k / n))) + 8
        lo_i, hi_i = max(1, want - margin), min(s - 2, want + margin)
        if lo_i >= hi_i:
            return False
        select(sample, lo_i)
        select(sample, hi_i)
        band = sample[lo_i : hi_i + 1]
        band.sort()  # what lies between the two ranks, in order: nine thresholds from it
        t = np.empty(9, np.uint32)
        for j in range(9):
            t[j] = band[(j * (band.size - 1)) // 8]
        t0, t1, t2, t3, t4, t5, t6, t7, t8 = t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8]
        c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = c8 = nan = 0
        for i in range(n):  # counts at or above each threshold, vectorised
            v = a[i] & _ABS
            c0 += v >= t0
            c1 += v >= t1
            c2 += v >= t2
            c3 += v >= t3
            c4 += v >= t4
            c5 += v >= t5
            c6 += v >= t6
            c7 += v >= t7
            c8 += v >= t8
            nan += v > _INF
        counts = (c0, c1, c2, c3, c4, c5, c6, c7, c8)
        if nan or not (counts[0] >= k > counts[8]):
            return False
        j = 0
        while counts[j + 1] >= k:
            j += 1
        lo, width, above = t[j], t[j + 1] - t[j], counts[j + 1]  # the k-th lies in [t_j, t_j+1)
        nc = 0
        for b0 in range(0, n - n % 16, 16):  # a block of 16 is looked into only if it holds one
            hit = False
            for q in range(16):
                hit |= ((a[b0 + q] & _ABS) - lo) < width
            if hit:
                for q in range(16):
                    v = a[b0 + q] & _ABS
                    if v - lo < width and nc < cand.size:
                        cand[nc] = v
                        nc += 1
        for i in range(n - n % 16, n):
            v = a[i] & _ABS
            if v - lo < width and nc < cand.size:
                cand[nc] = v
                nc += 1
        need = k - above
        if nc >= cand.size or need > nc:
            return False
        inside = cand[:nc]
        thr = select(inside, nc - need)
        gt, eq = above, 0
        for i in range(nc):
            gt += inside[i] > thr
            eq += inside[i] == thr
        if gt + eq != k:  # ties at the threshold beyond what is kept
            return False
        for i in range(n):
            mask[i] = (a[i] & _ABS) >= thr
        vi = 0
        for i in range(n):  # branch-free compaction: every entry is written, kept ones advance
            vals[vi] = f[i]
            vi += mask[i]
        return True

    return kernel


@cache
def place_rows() -> Callable:
    """``(bits (rows, n/8) u8, vals (rows·k,), out (rows, n))``: TopK's decode from its bitmask
    (little-endian bits) without unpacking it: each row zeroed, then its kept values written
    at its set bits in order."""

    @_njit()(nogil=True, boundscheck=False, cache=True)
    def kernel(bits, vals, out):
        rows, n = out.shape
        k = vals.size // rows
        for r in range(rows):
            row, kept, bt = out[r], vals[r * k : (r + 1) * k], bits[r]
            row[:] = 0
            vi = 0
            for p in range(n // 8):
                byte = np.int32(bt[p])
                while byte:  # one step per set bit: its position from the table
                    row[p * 8 + _LOWEST_BIT[byte]] = kept[vi]
                    vi += 1
                    byte &= byte - 1

    return kernel


@cache
def unkept_rows() -> Callable:
    """``(bits (rows, n/8) u8, v (rows, n) f32, e (rows, n) f32)``: e = v where a bit is clear,
    +0 where it is set: error feedback's carried error over TopK's bitmask, in one pass and
    with the mask unpacked nowhere. On the bits (v & (bit − 1)): branch-free, vectorised, the
    same bits as ``torch.where(mask, 0, v)`` (6.5 ms where that took 27 on the benchmark's
    tensor)."""

    @_njit()(nogil=True, boundscheck=False, cache=True)
    def kernel(bits, v, e):
        rows, n = v.shape
        one = np.uint32(1)
        for r in range(rows):
            src, dst, bt = v[r].view(np.uint32), e[r].view(np.uint32), bits[r]
            for p in range(n // 8):
                byte = np.uint32(bt[p])
                for q in range(8):
                    dst[p * 8 + q] = src[p * 8 + q] & (((byte >> np.uint32(q)) & one) - one)

    return kernel
