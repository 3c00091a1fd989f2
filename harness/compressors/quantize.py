"""``quantize``: 2/4/8-bit codes with a per-column (per instance) scale and offset, bit-packed."""

from __future__ import annotations

import numpy as np
import torch

import harness.compressors.kernels as kernels  # not `from harness.compressors import`: a cycle
from basics.errors import ConfigError
from harness.compressors.base import Compressor, Context, as_3d, by_instance
from harness.compressors.shapes import fold, read_shape, shape_header
from harness.compressors.wire import Payload, pack_uint, unpack_uint

SLICE = 1 << 20  # elements per slice: temporaries stay in cache (and stochastic rounding draws per slice)


class Quantize(Compressor):
    """Uniform quantization per column: codes in [0, 2^bits − 1], offset = column min,
    step = (max − min)/(2^bits − 1), both fp32. Error ≤ step/2 (round to nearest) or < step
    (``stochastic: true``, unbiased, seeded)."""

    name = "quantize"
    sweep = {"bits": (8, 4, 2)}

    def __init__(self, *, bits: int = 8, stochastic: bool = False) -> None:
        if bits not in (2, 4, 8) or isinstance(bits, bool):
            raise ConfigError("bits", f"must be 2, 4 or 8, got {bits!r}")
        self.bits = bits
        self.stochastic = bool(stochastic)

    @property
    def rate(self) -> float:
        return 1.0 - self.bits / 32.0  # nominal, against fp32

    def encode(self, x: torch.Tensor, ctx: Context) -> Payload:
        g = as_3d(x.detach())
        b, n, d = g.shape
        fused = _fused_ok(g, self.bits) and not self.stochastic
        lo = hi = None
        if fused:  # one compiled pass for the min/max, one for codes and packing (kernels.py)
            lo, hi = torch.empty((b, 1, d), device=g.device), torch.empty((b, 1, d), device=g.device)
            if not kernels.column_min_max()(g.numpy(), lo.numpy()[:, 0], hi.numpy()[:, 0]):
                fused, lo = False, None  # a NaN: torch's min/max propagate it
        if lo is None:
            lo, hi = _column_min_max(g)
        step = (hi - lo) / (2**self.bits - 1)
        step = torch.where(step > 0, step, torch.ones_like(step))  # constant column: any step is exact
        inv = 1.0 / step
        if fused:
            packed = ctx.empty((b * n * d * self.bits // 8,), torch.uint8, g.device)
            kernels.quantize_encode(self.bits)(g.numpy(), lo.numpy()[:, 0], inv.numpy()[:, 0], packed.numpy())
            return Payload([packed, lo.view(-1), step.view(-1)], shape_header(x))
        codes = ctx.empty((b, n, d), torch.uint8, g.device)
        gen = ctx.generator(salt=2) if self.stochastic else None
        rows = max(1, SLICE // (b * d))
        scratch = ctx.empty((b, min(rows, n), d), torch.float32, g.device)
        top = 2**self.bits - 1
        fast = _numpy_ok(g) and gen is None
        # slices along n keep every temporary in cache; each is one reused scratch buffer
        for i in range(0, n, rows):
            part = scratch[:, : min(rows, n - i)]
            if fast:  # numpy's float32 ops round as torch's do (IEEE; rint = round half to even)
                p, c = part.numpy(), codes[:, i : i + rows].numpy()
                np.subtract(g[:, i : i + rows].numpy(), lo.numpy(), out=p)
                np.multiply(p, inv.numpy(), out=p)
                np.clip(np.rint(p, out=p), 0, top, out=p)
                np.copyto(c, p, casting="unsafe")
                continue
            torch.sub(g[:, i : i + rows].float(), lo, out=part).mul_(inv)
            if gen is not None:
                part += torch.rand(part.shape, generator=gen).to(part.device) - 0.5  # seeded on the CPU
            codes[:, i : i + rows].copy_(part.round_().clamp_(0, top))
        return Payload([pack_codes(codes, self.bits, ctx), lo.view(-1), step.view(-1)], shape_header(x))

    def decode(self, payload: Payload, ctx: Context) -> torch.Tensor:
        dtype, shape, _ = read_shape(payload.header)
        b, n, d = fold(shape)
        if dtype == torch.float32 and payload.device.type == "cpu" and _whole_bytes(d, self.bits):
            out = ctx.empty((b, n, d), dtype, payload.device)
            lo, step = (payload.parts[i].view(torch.float32).view(b, d).numpy() for i in (1, 2))
            kernels.quantize_decode(self.bits)(payload.parts[0].numpy(), lo, step, out.numpy())
            return out.view(shape)
        codes = unpack_codes(payload.parts[0], b * n * d, self.bits, ctx).view(b, n, d)
        lo = payload.parts[1].view(torch.float32).view(b, 1, d)
        step = payload.parts[2].view(torch.float32).view(b, 1, d)
        out = ctx.empty((b, n, d), dtype, payload.device)
        rows = max(1, SLICE // (b * d))
        scratch = ctx.empty((b, min(rows, n), d), torch.float32, payload.device)
        value = ctx.empty((b, min(rows, n), d), torch.float32, payload.device) if dtype != torch.float32 else None
        for i in range(0, n, rows):
            m = min(rows, n - i)
            if payload.device.type == "cpu":
                np.copyto(scratch[:, :m].numpy(), codes[:, i : i + rows].numpy(), casting="unsafe")
            else:
                scratch[:, :m].copy_(codes[:, i : i + rows])
            # addcmul (lo + codes·step, as one fused operation): the decoded values stay what they were
            if value is None:
                torch.addcmul(lo, scratch[:, :m], step, out=out[:, i : i + rows])
            else:  # computed in fp32, then cast to the tensor's dtype (as a plain assignment would)
                out[:, i : i + rows].copy_(torch.addcmul(lo, scratch[:, :m], step, out=value[:, :m]))
        return out.view(shape)


def _numpy_ok(t: torch.Tensor) -> bool:
    return t.device.type == "cpu" and t.dtype == torch.float32


def _fused_ok(g: torch.Tensor, bits: int) -> bool:
    """Whether the compiled kernels take this (b, n, d) view: CPU float32, contiguous, and rows
    that pack to whole bytes (d a multiple of 8/bits codes)."""
    return _numpy_ok(g) and g.is_contiguous() and _whole_bytes(g.shape[-1], bits)


def _whole_bytes(d: int, bits: int) -> bool:
    """Whether a row of d codes packs to whole bytes (what the kernels' row layout needs)."""
    return d % (8 // bits) == 0


def pack_codes(codes: torch.Tensor, bits: int, ctx: Context) -> torch.Tensor:
    """uint8 codes < 2**bits -> :func:`pack_uint`'s bytes (8 // bits codes per byte, the first in
    the low bits). On the CPU the codes are read as 16- or 32-bit words and folded with shifts,
    into the boundary's buffer: the same bytes, in a few contiguous passes."""
    flat = codes.reshape(-1)
    if bits == 8:
        return flat
    per = 8 // bits
    if flat.device.type != "cpu" or flat.numel() % per:
        return pack_uint(flat, bits)
    word = flat.numpy().view(np.uint16 if per == 2 else np.uint32)  # little-endian: code 0 in the low byte
    acc = ctx.empty((word.size,), torch.int16 if per == 2 else torch.int32, flat.device).numpy().view(word.dtype)
    tmp = ctx.empty((word.size,), torch.int16 if per == 2 else torch.int32, flat.device).numpy().view(word.dtype)
    acc[:] = word
    for j in range(1, per):  # code j sits at bit 8j; its place in the byte is bit j·bits
        np.right_shift(word, 8 * j - j * bits, out=tmp)
        np.bitwise_or(acc, tmp, out=acc)
    out = ctx.empty((word.size,), torch.uint8, flat.device)
    np.copyto(out.numpy(), acc, casting="unsafe")  # the low byte holds every code
    return out


def unpack_codes(packed: torch.Tensor, n: int, bits: int, ctx: Context) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: n uint8 codes (into the boundary's buffer on the CPU)."""
    if bits == 8:
        return packed[:n]
    per, mask = 8 // bits, (1 << bits) - 1
    if packed.device.type != "cpu" or n % per:
        return unpack_uint(packed, n, bits)
    p = packed.numpy()[: n // per]
    out = ctx.empty((n,), torch.uint8, packed.device)
    word = out.numpy().view(np.uint16 if per == 2 else np.uint32)
    tmp = ctx.empty((p.size,), torch.int16 if per == 2 else torch.int32, packed.device).numpy().view(word.dtype)
    np.copyto(word, p, casting="unsafe")  # widened: the byte in the low bits
    np.bitwise_and(word, mask, out=word)
    for j in range(1, per):  # code j from bit j·bits of the byte to bit 8j of the word
        np.copyto(tmp, p, casting="unsafe")
        np.bitwise_and(tmp, mask << (j * bits), out=tmp)
        np.left_shift(tmp, 8 * j - j * bits, out=tmp)
        np.bitwise_or(word, tmp, out=word)
    return out


def _column_min_max(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-instance column min and max, (b, 1, d) fp32 (exact: the same whatever the order)."""
    b, n, d = g.shape
    if _numpy_ok(g) and by_instance(g):  # instance by instance: amax reads what amin just brought into cache
        lo = torch.empty((b, 1, d), device=g.device)
        hi = torch.empty((b, 1, d), device=g.device)
        for i in range(b):
            torch.amin(g[i], 0, out=lo[i, 0])
            torch.amax(g[i], 0, out=hi[i, 0])
        return lo, hi
    if _numpy_ok(g):  # numpy reduces over the middle axis in one call
        gn = g.numpy()
        return torch.from_numpy(gn.min(axis=1, keepdims=True)), torch.from_numpy(gn.max(axis=1, keepdims=True))
    rows = max(1, SLICE // (b * d))
    lo = torch.full((b, 1, d), float("inf"), device=g.device)
    hi = torch.full((b, 1, d), float("-inf"), device=g.device)
    for i in range(0, n, rows):
        mn, mx = torch.aminmax(g[:, i : i + rows].float(), dim=1, keepdim=True)
        torch.minimum(lo, mn, out=lo)
        torch.maximum(hi, mx, out=hi)
    return lo, hi
