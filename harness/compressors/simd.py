"""Blocks of eight 32-bit lanes for the codec kernels (``lane_kernels.py``), as numba intrinsics.

numba vectorises plain loops, but not the two steps a sparse codec spends its time in:
turning eight comparisons into one byte of a bitmask, and moving the kept lanes of a block
together (compress) or apart again (expand). Written as loops, each kept entry costs a
scalar store and a dependent index update (~0.5 ms per 524,288-entry row; TopK sat at 8× the
memory floor). Here each is a handful of vector instructions per 8 entries:

- :func:`mask_ge8` / :func:`mask_in8`: compare 8 magnitudes (the fp32 bits without the sign,
  ordered as the magnitudes are) with a threshold, the vector of booleans bitcast to one byte
  (``vmovmskps`` on x86): generic LLVM IR, any target.
- :func:`compress8` / :func:`expand8` (:func:`expand_add8`): a permutation of the 8 lanes
  chosen by that byte from a 256-entry table (:data:`COMPRESS`, :data:`EXPAND`). With AVX2 it
  is one ``vpermd``; elsewhere the same permutation as 8 lane extracts (generic IR, slower,
  the same result).
  ``compress8`` stores all 8 lanes (the kept ones first): the destination needs 7 spare slots.

Large decoded outputs are written with non-temporal stores where 32-byte aligned
(:func:`expand8_streaming`, :func:`stream_row`: no read of the destination's lines into the
cache first, half the memory traffic of a plain store; then :func:`fence`).

``PIPENEM_CODEC_SIMD=generic`` takes the generic permutation on an AVX2 host (tests compare the
two); the choice is part of what numba compiles, so such a process should use its own
``NUMBA_CACHE_DIR``.
"""

from __future__ import annotations

import os

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_I8, _I32, _I64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
_V8 = ir.VectorType(_I32, 8)
_F8 = ir.VectorType(ir.FloatType(), 8)
ABS = 0x7FFFFFFF  # an fp32's bits without its sign


def _host_avx2() -> bool:
    if os.environ.get("PIPENEM_CODEC_SIMD") == "generic":
        return False
    import llvmlite.binding as ll

    return bool(ll.get_host_cpu_features().get("avx2", False))


AVX2 = _host_avx2()


def _table(expand: bool) -> np.ndarray:
    """(256·8,) int32: for each byte m, the lane each output lane takes. Compress: the set
    lanes of m in order (then 0s); expand: lane q takes the rank of q among m's set lanes."""
    t = np.zeros((256, 8), np.int32)
    for m in range(256):
        on = [q for q in range(8) if m >> q & 1]
        if expand:
            t[m, on] = np.arange(len(on))
        else:
            t[m, : len(on)] = on
    return t.reshape(-1)


COMPRESS, EXPAND = _table(False), _table(True)


def _block(context, builder, aryty, ary, idx) -> ir.Value:
    """A pointer to the 8 lanes ary[idx : idx + 8] (any 4-byte element type)."""
    a = context.make_array(aryty)(context, builder, ary)
    return builder.bitcast(builder.gep(a.data, [idx]), _V8.as_pointer())


def _splat(builder, x: ir.Value) -> ir.Value:
    x = builder.trunc(x, _I32) if x.type.width > 32 else builder.zext(x, _I32) if x.type.width < 32 else x
    v = builder.insert_element(ir.Constant(_V8, ir.Undefined), x, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, ir.Constant(_V8, ir.Undefined), ir.Constant(_V8, [0] * 8))


def _magnitudes(context, builder, aryty, ary, idx) -> ir.Value:
    v = builder.load(_block(context, builder, aryty, ary, idx), align=4)
    return builder.and_(v, ir.Constant(_V8, [ABS] * 8))


def _permute(builder, v: ir.Value, idx: ir.Value) -> ir.Value:
    if AVX2:
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V8, [_V8, _V8]), "llvm.x86.avx2.permd")
        return builder.call(fn, [v, idx])
    out = ir.Constant(_V8, ir.Undefined)
    for q in range(8):
        lane = builder.extract_element(idx, ir.Constant(_I32, q))
        out = builder.insert_element(out, builder.extract_element(v, lane), ir.Constant(_I32, q))
    return out


def _table_row(context, builder, aryty, table, m: ir.Value) -> ir.Value:
    row = builder.mul(builder.zext(m, _I64), ir.Constant(_I64, 8))
    return builder.load(_block(context, builder, aryty, table, row), align=4)


@intrinsic
def mask_ge8(typingctx, a, i, thr):
    """``uint8``: bit q set where (a[i + q] & ABS) >= thr, unsigned (a: uint32 view of fp32)."""

    def codegen(context, builder, sig, args):
        v = _magnitudes(context, builder, sig.args[0], args[0], args[1])
        return builder.bitcast(builder.icmp_unsigned(">=", v, _splat(builder, args[2])), _I8)

    return types.uint8(a, i, thr), codegen


@intrinsic
def mask_in8(typingctx, a, i, lo, hi):
    """``uint8``: bit q set where lo <= (a[i + q] & ABS) < hi, unsigned."""

    def codegen(context, builder, sig, args):
        v = _magnitudes(context, builder, sig.args[0], args[0], args[1])
        low = builder.icmp_unsigned(">=", v, _splat(builder, args[2]))
        high = builder.icmp_unsigned("<", v, _splat(builder, args[3]))
        return builder.bitcast(builder.and_(low, high), _I8)

    return types.uint8(a, i, lo, hi), codegen


@intrinsic
def compress8(typingctx, src, i, keep, m, table, dst, j):
    """dst[j : j + 8] = the lanes of (src[i : i + 8] & keep) whose bit is set in m, in order,
    then the rest (dst needs 7 slots past its last kept value). table: :data:`COMPRESS`."""

    def codegen(context, builder, sig, args):
        s, si, kp, mm, tb, d, dj = args
        v = builder.load(_block(context, builder, sig.args[0], s, si), align=4)
        v = builder.and_(v, _splat(builder, kp))
        out = _permute(builder, v, _table_row(context, builder, sig.args[4], tb, mm))
        builder.store(out, _block(context, builder, sig.args[5], d, dj), align=4)
        return context.get_dummy_value()

    return types.void(src, i, keep, m, table, dst, j), codegen


def _lanes_set(builder, m: ir.Value) -> ir.Value:
    """<8 x i1>: lane q set where bit q of the byte m is."""
    bits = builder.and_(_splat(builder, m), ir.Constant(_V8, [1 << q for q in range(8)]))
    return builder.icmp_unsigned("!=", bits, ir.Constant(_V8, [0] * 8))


def _expanded(context, builder, sig, args) -> ir.Value:
    """The 8 lanes :func:`expand8` writes: the next values where m's bits are set, else 0."""
    v_, vj, mm, tb = args[:4]
    v = builder.load(_block(context, builder, sig.args[0], v_, vj), align=4)
    placed = _permute(builder, v, _table_row(context, builder, sig.args[3], tb, mm))
    return builder.select(_lanes_set(builder, mm), placed, ir.Constant(_V8, [0] * 8))


@intrinsic
def expand8(typingctx, vals, j, m, table, out, i):
    """out[i : i + 8] = lane q: the next of vals[j : j + 8] where bit q of m is set, else 0
    (reads 8 lanes from j: the caller keeps j + 8 within vals). table: :data:`EXPAND`."""

    def codegen(context, builder, sig, args):
        out = _block(context, builder, sig.args[4], args[4], args[5])
        builder.store(_expanded(context, builder, sig, args), out, align=4)
        return context.get_dummy_value()

    return types.void(vals, j, m, table, out, i), codegen


@intrinsic
def expand_add8(typingctx, vals, j, m, table, out, i):
    """:func:`expand8` added to what out[i : i + 8] holds (fp32 lanes: +0 where bit q is clear,
    so out + that is what adding the decoded tensor gives, -0 turning +0 included)."""

    def codegen(context, builder, sig, args):
        add = builder.bitcast(_expanded(context, builder, sig, args), _F8)
        ptr = _block(context, builder, sig.args[4], args[4], args[5])
        total = builder.fadd(builder.bitcast(builder.load(ptr, align=4), _F8), add)
        builder.store(builder.bitcast(total, _V8), ptr, align=4)
        return context.get_dummy_value()

    return types.void(vals, j, m, table, out, i), codegen


@intrinsic
def clear8(typingctx, src, i, m, dst):
    """dst[i : i + 8] = src[i : i + 8] with the lanes whose bit is set in m made +0 (what error
    feedback carries: the entries a mask did not keep)."""

    def codegen(context, builder, sig, args):
        s, si, mm, d = args
        v = builder.load(_block(context, builder, sig.args[0], s, si), align=4)
        out = builder.select(_lanes_set(builder, mm), ir.Constant(_V8, [0] * 8), v)
        builder.store(out, _block(context, builder, sig.args[3], d, si), align=4)
        return context.get_dummy_value()

    return types.void(src, i, m, dst), codegen


def _store_streaming(builder, value: ir.Value, ptr: ir.Value) -> None:
    """A non-temporal store (``!nontemporal``: ``vmovntps`` on x86): the line is written to
    memory without being read into the cache first, half the traffic of a plain store to a
    line not in cache. Needs a 32-byte aligned address."""
    st = builder.store(value, ptr, align=32)
    st.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(_I32, 1)]))


@intrinsic
def expand8_streaming(typingctx, vals, j, m, table, out, i):
    """:func:`expand8` with a non-temporal store (out + i 32-byte aligned; :func:`fence` after)."""

    def codegen(context, builder, sig, args):
        out = _block(context, builder, sig.args[4], args[4], args[5])
        _store_streaming(builder, _expanded(context, builder, sig, args), out)
        return context.get_dummy_value()

    return types.void(vals, j, m, table, out, i), codegen


@intrinsic
def stream_row(typingctx, src, dst):
    """dst[:] = src[:] (1-D, 4-byte elements, a multiple of 8 of them) with non-temporal stores
    (dst 32-byte aligned; :func:`fence` after): a row built in cache, written out."""

    def codegen(context, builder, sig, args):
        s = context.make_array(sig.args[0])(context, builder, args[0])
        d = context.make_array(sig.args[1])(context, builder, args[1])
        n = builder.extract_value(s.shape, 0)
        src, dst = builder.bitcast(s.data, _V8.as_pointer()), builder.bitcast(d.data, _V8.as_pointer())
        with cgutils.for_range(builder, builder.udiv(n, ir.Constant(n.type, 8))) as loop:
            v = builder.load(builder.gep(src, [loop.index]), align=4)
            _store_streaming(builder, v, builder.gep(dst, [loop.index]))
        return context.get_dummy_value()

    return types.void(src, dst), codegen


@intrinsic
def fence(typingctx):
    """A full memory fence: non-temporal stores are weakly ordered, so a kernel that made them
    ends with one before anything else (a sending thread) reads what they wrote."""

    def codegen(context, builder, sig, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def popcount8(typingctx, m):
    """The set bits of a byte, as an intp (``llvm.ctpop``)."""

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I8, [_I8]), "llvm.ctpop.i8")
        return builder.zext(builder.call(fn, [args[0]]), _I64)

    return types.intp(m), codegen
