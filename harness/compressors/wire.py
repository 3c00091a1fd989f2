"""Payloads: exactly what crosses the wire, and their exact size in bytes.

Wire layout of a payload (little-endian)::

    u8  n_header   u8 n_parts
    i64 header[n_header]                 small ints the decoder needs (shapes, k, ...)
    per part: u8 dtype code, u32 numel
    zero padding to a multiple of 8
    part bytes, each padded to a multiple of 8 (so the receiver views them in place)

``Payload.nbytes`` is ``len(Payload.to_bytes())`` computed without copying:
values, indices, masks, scales and this header are all counted. This is also exactly
what a pipeline link carries (``harness/runtime/transport.py`` sends these bytes, in pieces so
the large parts are not copied, behind a 16-byte frame: total and header length).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import torch

DTYPES: list[torch.dtype] = [
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.uint8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.float64,
    torch.int8,
    torch.bool,
]
DTYPE_CODES = {dt: i for i, dt in enumerate(DTYPES)}


@dataclass
class Payload:
    parts: list[torch.Tensor]  # 1-D, contiguous, on the device of the tensor they encode
    header: tuple[int, ...] = ()

    @property
    def device(self) -> torch.device:
        return self.parts[0].device if self.parts else torch.device("cpu")

    def to(self, device: torch.device | str) -> Payload:
        """The same payload with its parts on ``device`` (a receiver puts the wire bytes where it decodes)."""
        return Payload([p.to(device) for p in self.parts], self.header)

    @property
    def header_bytes(self) -> int:
        return align(2 + 8 * len(self.header) + 5 * len(self.parts))

    @property
    def nbytes(self) -> int:
        return self.header_bytes + sum(align(p.numel() * p.element_size()) for p in self.parts)

    def header_block(self) -> torch.Tensor:
        """The first ``header_bytes`` of :meth:`to_bytes` (counts, header ints, part specs, padding)."""
        head = struct.pack(f"<BB{len(self.header)}q", len(self.header), len(self.parts), *self.header)
        head += b"".join(struct.pack("<BI", DTYPE_CODES[p.dtype], p.numel()) for p in self.parts)
        out = torch.zeros(self.header_bytes, dtype=torch.uint8, device="cpu")  # wire bytes live on the host
        out[: len(head)] = torch.frombuffer(bytearray(head), dtype=torch.uint8)
        return out

    def raw_parts(self) -> list[torch.Tensor]:
        """Each part's bytes as a uint8 view (no copy, except bools, which go as one byte each)."""
        out = []
        for p in self.parts:
            raw = p.contiguous().reshape(-1).cpu()  # the bytes that go on the wire: the one host copy
            out.append(raw.to(torch.uint8) if p.dtype == torch.bool else raw.view(torch.uint8))
        return out

    def to_bytes(self) -> torch.Tensor:
        """One uint8 tensor, ready for a send; ``len == nbytes``."""
        out = torch.zeros(self.nbytes, dtype=torch.uint8, device="cpu")
        out[: self.header_bytes] = self.header_block()
        off = self.header_bytes
        for raw in self.raw_parts():
            out[off : off + raw.numel()] = raw
            off += align(raw.numel())
        return out

    @classmethod
    def from_bytes(cls, buf: torch.Tensor) -> Payload:
        header, specs, off = parse_header_block(buf)
        parts = []
        for dtype, numel in specs:
            size = numel * dtype.itemsize
            chunk = buf[off : off + size]
            parts.append(chunk.bool() if dtype == torch.bool else chunk.view(dtype))
            off += align(size)
        return cls(parts=parts, header=tuple(header))


def parse_header_block(buf: torch.Tensor) -> tuple[tuple[int, ...], list[tuple[torch.dtype, int]], int]:
    """(header ints, (dtype, numel) per part, header_bytes) from the start of a payload's bytes."""
    n_header, n_parts = int(buf[0]), int(buf[1])
    view = buf[: 2 + 8 * n_header + 5 * n_parts].numpy().tobytes()
    header = struct.unpack_from(f"<{n_header}q", view, 2)
    off = 2 + 8 * n_header
    specs = []
    for _ in range(n_parts):
        code, numel = struct.unpack_from("<BI", view, off)
        specs.append((DTYPES[code], numel))
        off += 5
    return tuple(header), specs, align(off)


def part_as(part: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A payload part read as the dtype it holds: a view of wire bytes, or the part itself when it
    already has that dtype (``Tensor.view(dtype)`` would drop autograd: decoders stay
    differentiable in their values, which ``runtime: torch`` back-propagates through)."""
    return part if part.dtype == dtype else part.view(dtype)


def part_bytes(dtype: torch.dtype, numel: int) -> int:
    """Bytes a part of this dtype and size takes on the wire (bools: one byte each), unpadded."""
    return numel * (1 if dtype == torch.bool else dtype.itemsize)


def align(n: int) -> int:
    """Round up to a multiple of 8 (parts start 8-aligned so they can be viewed in place)."""
    return (n + 7) & ~7


def dense_bytes(shape: torch.Size | tuple[int, ...], dtype: torch.dtype) -> int:
    n = 1
    for s in shape:
        n *= s
    return n * dtype.itemsize


# ------------------------------------------------------------------ bit packing


def _bit_weights(device: torch.device) -> torch.Tensor:
    return torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8, device=device)


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """A bool tensor -> uint8, 8 bits per byte (little-endian within a byte)."""
    flat = bits.reshape(-1)
    if flat.device.type == "cpu":  # numpy's packbits: the same bytes, one pass
        return torch.from_numpy(np.packbits(flat.numpy(), bitorder="little"))
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return (flat.view(-1, 8).to(torch.uint8) * _bit_weights(flat.device)).sum(1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, n: int) -> torch.Tensor:
    if packed.device.type == "cpu":
        return torch.from_numpy(np.unpackbits(packed.numpy(), count=n, bitorder="little")).view(torch.bool)
    return ((packed.unsqueeze(1) & _bit_weights(packed.device)) != 0).reshape(-1)[:n]


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """A (rows, n) bool mask -> each row packed to ⌈n/8⌉ bytes (little-endian bits): the bitmask
    form of :func:`encode_positions`."""
    rows, n = mask.shape
    if mask.device.type == "cpu":
        return torch.from_numpy(np.packbits(mask.numpy(), axis=1, bitorder="little")).view(-1)
    pad = (-n) % 8
    if pad:
        mask = torch.cat([mask, mask.new_zeros(rows, pad)], 1)
    return pack_bits(mask)


def unpack_mask(data: torch.Tensor, rows: int, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_mask`: the (rows, n) bool mask."""
    stride = n + ((-n) % 8)
    if data.device.type == "cpu":
        packed = data.numpy().reshape(rows, stride // 8)
        return torch.from_numpy(np.unpackbits(packed, axis=1, count=n, bitorder="little")).view(torch.bool)
    return unpack_bits(data, rows * stride).view(rows, stride)[:, :n]


def pack_uint(values: torch.Tensor, width: int) -> torch.Tensor:
    """Non-negative ints < 2**width, each stored in exactly ``width`` bits."""
    if width in (8, 16, 32):
        return values.to({8: torch.uint8, 16: torch.int16, 32: torch.int32}[width]).reshape(-1).view(torch.uint8)
    if 8 % width == 0:  # 1, 2, 4 bits: several values per byte, no bit expansion needed
        per = 8 // width
        v = values.reshape(-1).to(torch.uint8)
        pad = (-v.numel()) % per
        if pad:
            v = torch.cat([v, v.new_zeros(pad)])
        v = v.view(-1, per)
        out = v[:, 0].clone()
        for j in range(1, per):
            out |= v[:, j] << (j * width)
        return out
    shifts = torch.arange(width, dtype=torch.int64, device=values.device)
    bits = (values.reshape(-1, 1).to(torch.int64) >> shifts) & 1
    return pack_bits(bits.bool())


def unpack_uint(packed: torch.Tensor, n: int, width: int) -> torch.Tensor:
    """Inverse of :func:`pack_uint`: int64 values (uint8 for widths of 8 bits or fewer)."""
    if width <= 8 and 8 % width == 0:
        if width == 8:
            return packed[:n]
        per, mask = 8 // width, (1 << width) - 1
        out = torch.empty(packed.numel(), per, dtype=torch.uint8, device=packed.device)
        for j in range(per):
            torch.bitwise_and(packed >> (j * width), mask, out=out[:, j])
        return out.view(-1)[:n]
    if width in (16, 32):
        dt = {8: torch.uint8, 16: torch.int16, 32: torch.int32}[width]
        out = packed.view(dt)[:n].to(torch.int64)
        return out & 0xFFFF if width == 16 else out
    bits = unpack_bits(packed, n * width).view(n, width).to(torch.int64)
    return (bits << torch.arange(width, dtype=torch.int64, device=packed.device)).sum(1)


def index_width(n: int) -> int:
    """Bits needed for an index into n positions."""
    return max(1, (n - 1).bit_length())


def encode_positions(idx: torch.Tensor, n: int) -> tuple[torch.Tensor, int]:
    """Sorted kept positions (rows of ``idx``, each < n) as the cheaper of a bitmask or packed indices.

    Returns (bytes, mode): mode 0 = bitmask of n bits per row, 1 = packed indices.
    """
    rows, k = idx.shape
    mask_bytes = rows * ((n + 7) // 8)
    width = index_width(n)
    packed_bytes = (rows * k * width + 7) // 8
    if mask_bytes <= packed_bytes:
        mask = torch.zeros(rows, n, dtype=torch.bool, device=idx.device)
        mask.scatter_(1, idx, True)
        return pack_mask(mask), 0
    return pack_uint(idx, width), 1


def encode_mask_positions(mask: torch.Tensor, k: int) -> tuple[torch.Tensor, int]:
    """:func:`encode_positions` from the (rows, n) kept mask itself (k kept per row): the same
    bytes, without building index tensors when the bitmask is the cheaper form."""
    rows, n = mask.shape
    if rows * ((n + 7) // 8) <= (rows * k * index_width(n) + 7) // 8:
        return pack_mask(mask), 0
    idx = mask.nonzero()[:, 1].view(rows, k)  # row-major: each row's positions in order
    return pack_uint(idx, index_width(n)), 1


def encode_bits_positions(bits: torch.Tensor, n: int, k: int) -> tuple[torch.Tensor, int]:
    """:func:`encode_positions` from the kept mask already packed, a row (k kept) to ⌈n/8⌉
    bytes as :func:`pack_mask` packs it: those bytes, or the packed indices where cheaper."""
    rows = bits.shape[0]
    if rows * ((n + 7) // 8) <= (rows * k * index_width(n) + 7) // 8:
        return bits.view(-1), 0
    return encode_mask_positions(unpack_mask(bits.view(-1), rows, n), k)


def decode_positions(data: torch.Tensor, mode: int, rows: int, k: int, n: int) -> torch.Tensor:
    """Inverse of :func:`encode_positions`: (rows, k) sorted indices."""
    if mode == 0:
        return unpack_mask(data, rows, n).nonzero()[:, 1].view(rows, k)
    return unpack_uint(data, rows * k, index_width(n)).to(torch.int64).view(rows, k)


def positions_bytes(rows: int, k: int, n: int) -> int:
    """Bytes :func:`encode_positions` uses (for payload-size formulas)."""
    return min(rows * ((n + 7) // 8), (rows * k * index_width(n) + 7) // 8)
