"""``quantize``: 2/4/8-bit codes with a per-column (per instance) scale and offset, bit-packed."""

from __future__ import annotations

import torch

from basics.errors import ConfigError
from harness.compressors.base import Compressor, Context, as_3d
from harness.compressors.shapes import fold, read_shape, shape_header
from harness.compressors.wire import Payload, pack_uint, unpack_uint


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
        lo, hi = _column_min_max(g)
        step = (hi - lo) / (2**self.bits - 1)
        step = torch.where(step > 0, step, torch.ones_like(step))  # constant column: any step is exact
        inv = 1.0 / step
        codes = torch.empty(b, n, d, dtype=torch.uint8, device=g.device)
        gen = ctx.generator(salt=2) if self.stochastic else None
        rows = max(1, SLICE // (b * d))
        # slices along n keep every temporary in cache (fresh tensor-sized temporaries fault in slowly)
        for i in range(0, n, rows):
            part = (g[:, i : i + rows].float() - lo).mul_(inv)
            if gen is not None:
                part += torch.rand(part.shape, generator=gen).to(part.device) - 0.5  # seeded on the CPU
            codes[:, i : i + rows] = part.round_().clamp_(0, 2**self.bits - 1)
        return Payload([pack_uint(codes, self.bits), lo.view(-1), step.view(-1)], shape_header(x))

    def decode(self, payload: Payload, ctx: Context) -> torch.Tensor:
        dtype, shape, _ = read_shape(payload.header)
        b, n, d = fold(shape)
        codes = unpack_uint(payload.parts[0], b * n * d, self.bits).view(b, n, d)
        lo = payload.parts[1].view(torch.float32).view(b, 1, d)
        step = payload.parts[2].view(torch.float32).view(b, 1, d)
        out = torch.empty(b, n, d, dtype=dtype, device=payload.device)
        rows = max(1, SLICE // (b * d))
        for i in range(0, n, rows):
            out[:, i : i + rows] = torch.addcmul(lo, codes[:, i : i + rows].float(), step)
        return out.view(shape)


SLICE = 1 << 20  # elements per slice


def _column_min_max(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-instance column min and max, (b, 1, d) fp32, in cache-sized slices along n."""
    b, n, d = g.shape
    rows = max(1, SLICE // (b * d))
    lo = torch.full((b, 1, d), float("inf"), device=g.device)
    hi = torch.full((b, 1, d), float("-inf"), device=g.device)
    for i in range(0, n, rows):
        mn, mx = torch.aminmax(g[:, i : i + rows].float(), dim=1, keepdim=True)
        torch.minimum(lo, mn, out=lo)
        torch.maximum(hi, mx, out=hi)
    return lo, hi
