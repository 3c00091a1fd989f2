"""Compiled CPU kernels built on :mod:`simd`'s 8-lane blocks (numba): TopK's on its payload's
own layout (each row's kept mask as bytes of little-endian bits and its kept values in
position order; randk's rows share one mask drawn from the seed: :func:`compress_rows`,
:func:`place_rows`), error feedback's fused paths, sketch's per-chunk top-s
(:func:`chunk_top`) and column masking's streamed decode (:func:`scatter_columns`).

Imported on first use through ``kernels.py`` (it imports numba). The functions are at module
level, not closures, so that numba's disk cache finds them again in the next process.

Selection is exact and sort-free (:func:`top_rows`); the encode's compaction and the decode's
expansion move 8 entries at a time (:mod:`simd`), and large decoded outputs are written with
non-temporal stores. On the benchmark's tensor (32 rows of 524,288) topk's encode takes ~13 ms
and its decode ~4 ms where the scalar loops they replace took 48 and 18 ms (a memory floor of
~8 ms: ``benchmarks/compressors.py``).
"""

from __future__ import annotations

import numpy as np

from harness.compressors.base import LOOP_BYTES
from harness.compressors.jit import njit
from harness.compressors.simd import (
    ABS,
    COMPRESS,
    EXPAND,
    clear8,
    compress8,
    expand8,
    expand8_streaming,
    expand_add8,
    fence,
    mask_ge8,
    mask_in8,
    popcount8,
    stream_row,
)

_jit = njit()
_ABS = np.uint32(ABS)  # an fp32's bits without the sign: ordered as the magnitudes are
_NAN = np.uint32(0x7F800001)  # and from here up: NaN
_ALL = np.uint32(0xFFFFFFFF)
_ONE = np.uint64(1)
_NO_ROWS = np.empty((0, 0), np.float32)


@_jit(nogil=True, boundscheck=False, cache=True)
def select(c, kth):
    """In place: c[kth] becomes what a sort would put there (Hoare quickselect); returns it."""
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


@_jit(nogil=True, boundscheck=False, cache=True)
def top_row(f, k, bits, vals, sample, cand, hist, unkept):
    """One row of :func:`top_rows`: True where it wrote the row's bitmask bytes and values (and,
    where ``unkept`` has the row's size, f where not kept and +0 where kept into it)."""
    n = f.size
    a = f.view(np.uint32)
    s = sample.size
    stride = n // s
    for i in range(s):
        sample[i] = a[i * stride] & _ABS
    want = s - (k * s) // n  # the threshold's rank in the sample
    margin = int(4.0 * np.sqrt(k * s / n * (1.0 - k / n))) + 8
    lo = select(sample, max(0, want - margin))
    hi = np.uint64(select(sample, min(s - 1, want + margin))) + _ONE  # exclusive
    above = nc = nan = 0
    for i in range(0, n, 8):
        m = mask_in8(a, i, lo, hi)
        compress8(a, i, _ABS, m, COMPRESS, cand, nc)
        nc += popcount8(m)
        above += popcount8(mask_ge8(a, i, hi))
        nan += popcount8(mask_ge8(a, i, _NAN))
    if nan or not (above < k <= above + nc):
        return False
    need = k - above  # the need-th largest inside the bracket is the threshold
    width = hi - lo  # unsigned arithmetic throughout: numba turns mixed signs into floats
    shift = np.uint64(0)
    while (width - _ONE) >> shift >= hist.size:
        shift += _ONE
    hist[:] = 0
    for i in range(nc):
        hist[(cand[i] - lo) >> shift] += 1
    b = (width - _ONE) >> shift
    higher = 0  # entries in the bins above b
    while higher + hist[b] < need:
        higher += hist[b]
        b -= _ONE
    nb = 0
    for i in range(nc):  # bin b's entries to the front, branch-free
        c = cand[i]
        cand[nb] = c
        nb += ((c - lo) >> shift) == b
    inside = cand[:nb]
    thr = select(inside, nb - (need - higher))
    kept, ties = above + higher, 0
    for i in range(nb):
        kept += inside[i] >= thr
        ties += inside[i] == thr
    # more entries tie at the threshold than are kept: the first ones, in position order
    budget = k - (kept - ties) if kept != k else -1
    above_thr = np.uint64(thr) + _ONE
    vi = 0
    for i in range(0, n, 8):
        m = mask_ge8(a, i, thr)
        if budget >= 0:
            tied = m & ~mask_ge8(a, i, above_thr)
            for q in range(8):
                if (tied >> q) & 1:
                    if budget > 0:
                        budget -= 1
                    else:
                        m = np.uint8(m & ~(1 << q))
        bits[i >> 3] = m
        compress8(a, i, _ALL, m, COMPRESS, vals, vi)
        vi += popcount8(m)
        if unkept.size:
            clear8(a, i, m, unkept)
    return True


@_jit(nogil=True, boundscheck=False, cache=True)
def top_rows(f, k, bits, vals, done, sample, cand, hist):
    """``(f (rows, n) f32, k, bits (rows, n/8) u8, vals (rows·k + 8,) f32, done (rows,) bool,
    sample (SAMPLE,) u32, cand (n + 8,) u32, hist (HIST,) i64)``: each row's k entries of
    largest magnitude as TopK's payload: its bitmask bytes and its kept values in position
    order (``vals`` has 8 spare slots: :func:`simd.compress8` stores 8 lanes). Needs n % 8 == 0.
    The threshold is found without a sort:

    1. a strided sample brackets the k-th largest magnitude (± 4 standard deviations);
    2. one pass counts what lies above the bracket and compresses what lies inside into
       ``cand``, 8 entries at a time;
    3. a histogram of those finds the bin of the k-th; a quickselect inside that bin (a few
       entries) gives the exact magnitude;
    4. one pass writes the bitmask bytes and compresses the kept values.

    Where more entries tie at the threshold than are kept, the tied ones of lowest position are
    kept (the numpy path's rule). ``done[r]`` is False (row r untouched) where the row holds a
    NaN or the bracket missed: the caller does that row."""
    none = np.empty(0, np.uint32)
    for r in range(f.shape[0]):
        done[r] = top_row(f[r], k, bits[r], vals[r * k :], sample, cand, hist, none)


ERROR_FIRST, ERROR, ESTIMATE = 0, 1, 2  # top_rows_carrying's rules (error feedback's state)


@_jit(nogil=True, boundscheck=False, cache=True)
def top_rows_carrying(x, s, rule, k, bits, vals, done, sample, cand, hist, v):
    """:func:`top_rows` of v and error feedback's state update s, row by row through one row
    buffer ``v`` ((n,) f32), so that v is made, selected from and turned into the new state while
    the row is in cache (x and s cross memory once each). ``rule``:

    - ERROR (ef): v = x + s, then s = v where nothing was kept and +0 where kept (written as
      the row is compressed); ERROR_FIRST: the same with v = x (no carried error yet);
    - ESTIMATE (ef21's sender): v = x − s, then s += the row's decoded values (:func:`place_rows`).

    The same bits as ``torch.add``/``torch.sub``, the selection of v, and ``torch.where(mask,
    0, v)`` or ``s.add_(decoded)``. A row not ``done`` leaves s untouched. ``vals`` has 8 spare
    slots past its rows·k values."""
    none = np.empty(0, np.uint32)
    empty = np.empty((0, 0), np.float32)
    for r in range(x.shape[0]):
        if rule == ERROR_FIRST:
            src = x[r]
        else:
            xr, sr = x[r], s[r]
            if rule == ERROR:
                for i in range(v.size):
                    v[i] = xr[i] + sr[i]
            else:
                for i in range(v.size):
                    v[i] = xr[i] - sr[i]
            src = v
        # ef: the carried error is written as the row is compressed (s's row was read into v)
        unkept = s[r].view(np.uint32) if rule != ESTIMATE else none
        done[r] = top_row(src, k, bits[r], vals[r * k :], sample, cand, hist, unkept)
        if done[r] and rule == ESTIMATE:
            _place_add(bits[r : r + 1], vals[r * k : (r + 1) * k + 8], s[r : r + 1], empty)


@_jit(nogil=True, boundscheck=False, cache=True)
def compress_rows(f, bits, vals):
    """``(f (rows, n) f32, bits (n/8,) u8, vals (rows·k + 8,) f32)``: each row's entries where
    the one bitmask shared by all rows is set, in order (randk's encode: its positions as a
    bitmask), 8 at a time; vals has 8 spare slots."""
    table = COMPRESS
    vi = 0
    for r in range(f.shape[0]):
        a = f[r].view(np.uint32)
        for p in range(bits.size):
            m = bits[p]
            compress8(a, p * 8, _ALL, m, table, vals, vi)
            vi += popcount8(m)


def _placer(add: bool, copies: bool, streaming: bool):
    """:func:`place_rows` and its variants, one compiled loop each: ``add``, ``copies`` and
    ``streaming`` are constants of the compiled code (as arguments they slowed the plain decode
    from 4.7 to 8 ms: a check per block LLVM did not hoist)."""

    @_jit(nogil=True, boundscheck=False, cache=True)
    def kernel(bits, vals, out, copy):
        rows, nbytes = bits.shape
        total = vals.size
        vi = 0
        for r in range(rows):
            o, bt = out[r], bits[r]
            for p in range(nbytes):
                m = bt[p]
                if vi + 8 <= total:
                    if add:
                        expand_add8(vals, vi, m, EXPAND, o, p * 8)
                    elif streaming:
                        expand8_streaming(vals, vi, m, EXPAND, o, p * 8)
                    else:
                        expand8(vals, vi, m, EXPAND, o, p * 8)
                else:
                    j = vi
                    for q in range(8):
                        on = ((m >> q) & 1) != 0 and j < total
                        value = vals[j] if on else np.float32(0)
                        o[p * 8 + q] = o[p * 8 + q] + value if add else value
                        j += on
                if copies:
                    c = copy[r]
                    for q in range(p * 8, p * 8 + 8):
                        c[q] = o[q]
                vi += popcount8(m)
        if streaming:
            fence()

    return kernel


_place, _place_streaming = _placer(False, False, False), _placer(False, False, True)
_place_add, _place_add_copy = _placer(True, False, False), _placer(True, True, False)


def place_rows(bits, vals, out, add=False, copy=None):
    """``(bits (rows, n/8) u8, vals (rows·k,) f32, out (rows, n) f32)``: TopK's decode from its
    bitmask without unpacking it: 8 outputs at a time, each the next kept value where its bit
    is set and 0 elsewhere (:func:`simd.expand8`); the last blocks, with fewer than 8 values
    left to read, one lane at a time. ``add``: out += that instead, in place and without making
    the decoded tensor (EF21's estimate update; the same bits as ``out.add_(decoded)``, whose
    unkept entries are +0). ``copy`` (rows, n): the sum written there too, block by block
    (EF21's receiver hands out a copy of its estimate). The plain decode's output, where it is
    large (``base.LOOP_BYTES``: it would not stay in cache) and aligned, is written with
    non-temporal stores (4.7 -> ~3.7 ms on the benchmark's tensor)."""
    if not add:  # a large fresh output (past the cache anyway): streamed out where rows are aligned
        streams = out.nbytes >= LOOP_BYTES and out.ctypes.data % 32 == 0 and (out.shape[1] * 4) % 32 == 0
        (_place_streaming if streams else _place)(bits, vals, out, _NO_ROWS)
    elif copy is None:
        _place_add(bits, vals, out, _NO_ROWS)
    else:
        _place_add_copy(bits, vals, out, copy)


@_jit(nogil=True, boundscheck=False, cache=True)
def unkept_rows(bits, v, e):
    """``(bits (rows, n/8) u8, v (rows, n) f32, e (rows, n) f32)``: e = v where a bit is clear,
    +0 where it is set: error feedback's carried error over TopK's bitmask, in one pass and
    with the mask unpacked nowhere. On the bits (v & (bit − 1)): branch-free, vectorised, the
    same bits as ``torch.where(mask, 0, v)`` (6.5 ms where that took 27 on the benchmark's
    tensor)."""
    rows, n = v.shape
    one = np.uint32(1)
    for r in range(rows):
        src, dst, bt = v[r].view(np.uint32), e[r].view(np.uint32), bits[r]
        for p in range(n // 8):
            byte = np.uint32(bt[p])
            for q in range(8):
                dst[p * 8 + q] = src[p * 8 + q] & (((byte >> np.uint32(q)) & one) - one)


@_jit(nogil=True, boundscheck=False, cache=True)
def chunk_top(chunks, s, sparse):
    """``(chunks (c, w) f32, s, sparse (c, w) f32)``: each chunk's s entries of largest magnitude,
    the rest 0 (sketch's sparsification). Per chunk: the s-th largest of 32 interleaved groups'
    maxima is a lower bound of the s-th largest entry (the maxima are distinct entries); one
    vector pass compresses the entries at or above it (~16 of 512 at s = 13, with their
    positions), and each candidate's rank among those (how many are larger, or equal and
    earlier) keeps the s of rank < s. Counts instead of a sort or a running list: comparisons
    LLVM vectorises, no branch to mispredict (32 ms where ``abs().topk()`` + scatter took 260
    and a running top-s list 66, on the benchmark's tensor: 32,768 chunks of 512). Ties at the
    s-th place keep the lowest positions. Needs w % 32 == 0 and s <= 32."""
    c, w = chunks.shape
    groups = np.empty(32, np.float32)
    group_bits = groups.view(np.int32)  # >= 0: the bits order as the magnitudes do
    cand = np.empty(w + 8, np.int32)  # candidates' magnitude bits and positions
    where = np.empty(w + 8, np.int32)
    iota = np.arange(w + 8).astype(np.int32)
    for i in range(c):
        row, out = chunks[i], sparse[i]
        a = row.view(np.uint32)
        groups[:] = 0
        for r in range(w // 32):
            for g in range(32):
                groups[g] = np.maximum(groups[g], abs(row[r * 32 + g]))
        bound = np.int32(0)
        for g in range(32):  # the largest maximum with at least s maxima at or above it
            v, above = group_bits[g], np.int32(0)
            for h in range(32):
                above += np.int32(group_bits[h] >= v)
            if above >= s and v > bound:
                bound = v
        nc = 0
        for p in range(0, w, 8):
            m = mask_ge8(a, p, bound)
            compress8(a, p, _ABS, m, COMPRESS, cand, nc)
            compress8(iota, p, _ALL, m, COMPRESS, where, nc)
            nc += popcount8(m)
        out[:] = 0
        for t in range(nc):  # candidates are in position order: "equal and earlier" = h < t
            v, rank = cand[t], np.int32(0)
            for h in range(nc):
                rank += np.int32(cand[h] > v)
            for h in range(t):
                rank += np.int32(cand[h] == v)
            if rank < s:
                out[where[t]] = row[where[t]]


@_jit(nogil=True, boundscheck=False, cache=True)
def scatter_columns(vals, idx, out):
    """``(vals (b, n, k) f32, idx (b, k) i64, out (b, n, d) f32)``: out = 0 except
    out[i, :, idx[i]] = vals[i] (column masking's decode), each row built in a cached row buffer
    and written out with non-temporal stores (out 32-byte aligned, d % 8 == 0: the caller
    checks): ~3.5 ms where zeroing and filling the output in place took 7 and torch's
    per-instance zero + scatter 7.3 on the benchmark's tensor."""
    b, n, d = out.shape
    k = idx.shape[1]
    row = np.empty(d, np.float32)
    for i in range(b):
        cols = idx[i]
        for j in range(n):
            v = vals[i, j]
            row[:] = 0
            for t in range(k):
                row[cols[t]] = v[t]
            stream_row(row, out[i, j])
    fence()


@_jit(nogil=True, boundscheck=False, cache=True)
def scatter_rows(vals, idx, out):
    """``(vals (b, k, d) f32, idx (b, k) i64 sorted, out (b, n, d) f32)``: out = 0 except
    out[i, idx[i]] = vals[i] (row masking's decode), each row streamed out whole with
    non-temporal stores, a kept one from its values, the others from a zero row (out 32-byte
    aligned, d % 8 == 0: the caller checks)."""
    b, n, d = out.shape
    k = idx.shape[1]
    zeros = np.zeros(d, np.float32)
    for i in range(b):
        t = 0
        for j in range(n):
            if t < k and idx[i, t] == j:
                stream_row(vals[i, t], out[i, j])
                t += 1
            else:
                stream_row(zeros, out[i, j])
    fence()
