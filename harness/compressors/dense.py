"""Baselines: dense (``none``) and plain casts (``fp16``, ``bf16``)."""

from __future__ import annotations

from typing import ClassVar

import torch

from harness.compressors.base import Compressor, Context
from harness.compressors.shapes import read_shape, shape_header
from harness.compressors.wire import Payload, part_as


class NoCompression(Compressor):
    """Sends the tensor as it is: bit-exact."""

    name = "none"

    def encode(self, x: torch.Tensor, ctx: Context) -> Payload:
        return Payload([x.detach().contiguous().view(-1)], shape_header(x))

    def decode(self, payload: Payload, ctx: Context) -> torch.Tensor:
        dtype, shape, _ = read_shape(payload.header)
        return part_as(payload.parts[0], dtype).view(shape)


class _Cast(Compressor):
    target: ClassVar[torch.dtype]

    def encode(self, x: torch.Tensor, ctx: Context) -> Payload:
        out = ctx.empty((x.numel(),), self.target, x.device)
        out.copy_(x.detach().reshape(-1))  # the cast, into the boundary's buffer
        return Payload([out], shape_header(x))

    def decode(self, payload: Payload, ctx: Context) -> torch.Tensor:
        dtype, shape, _ = read_shape(payload.header)
        out = ctx.empty(shape, dtype, payload.device)
        out.view(-1).copy_(payload.parts[0].view(self.target))
        return out

    @property
    def rate(self) -> float:
        return 0.5


class Fp16(_Cast):
    name = "fp16"
    target = torch.float16


class Bf16(_Cast):
    name = "bf16"
    target = torch.bfloat16
