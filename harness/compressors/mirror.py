"""``mirror``: a backward compressor that sends the gradient only where the forward kept entries.

With exact boundary gradients (``train.boundary_grad: exact``) the sender of the
activations multiplies the gradient it gets back by its forward compressor's kept mask,
so every other entry is zeroed anyway. ``mirror`` therefore sends just the values at the
kept positions — no index bytes: both ends of the link hold that micro-batch's forward
payload (one sent it, one received it) and rebuild the positions from it. Its wire ratio
is the forward's dense/values ratio without the forward's index overhead.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from basics.errors import ConfigError
from harness.compressors.base import Compressor, Context, as_3d
from harness.compressors.shapes import read_shape, shape_header
from harness.compressors.wire import Payload, part_as


class Mirror(Compressor):
    name = "mirror"
    backward_only = True
    jacobian = "mask"
    _rate = math.nan  # whatever the forward keeps

    def check_forward(self, fwd: Compressor) -> None:
        if fwd.jacobian != "mask":
            raise ConfigError(
                "compression.bwd",
                f"mirror sends the gradient at the forward's kept positions; the forward "
                f"compressor {fwd.name!r} keeps none (use a masking one: topk, randk, column, row)",
            )

    @staticmethod
    def _mask(ctx: Context) -> torch.Tensor:
        mask = ctx.forward.kept_mask() if ctx.forward is not None else None
        if mask is None:
            raise ConfigError(
                "compression.bwd",
                "mirror needs the forward payload of its boundary (backward direction only, "
                "after a masking forward compressor)",
            )
        return mask

    def kept_mask(self, payload: Payload, ctx: Context) -> torch.Tensor:
        return self._mask(ctx)

    def encode(self, x: torch.Tensor, ctx: Context) -> Payload:
        g = as_3d(x.detach())
        mask = self._mask(ctx).expand_as(g)
        if g.device.type == "cpu" and g.dtype in (torch.float32, torch.float64, torch.float16):
            if not g.is_contiguous():
                g = ctx.empty(g.shape, g.dtype, g.device).copy_(g)
            kept = int(np.count_nonzero(mask.contiguous().numpy()))
            values = ctx.empty((kept,), g.dtype, g.device)  # numpy's compress: one pass, into the buffer
            np.compress(mask.contiguous().numpy().reshape(-1), g.numpy().reshape(-1), out=values.numpy())
            return Payload([values], shape_header(x))
        return Payload([torch.masked_select(g, mask)], shape_header(x))

    def decode(self, payload: Payload, ctx: Context) -> torch.Tensor:
        dtype, shape, _ = read_shape(payload.header)
        out = ctx.zeros(shape, dtype, payload.device)
        as_3d(out).masked_scatter_(self._mask(ctx), part_as(payload.parts[0], dtype))
        return out
