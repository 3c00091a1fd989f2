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
    # its decoded gradient is zero off the forward's kept positions: the forward's mask vjp
    # (exact boundary gradients) would leave it unchanged, so the stage skips that pass
    on_forward_support = True
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

    @staticmethod
    def _along_axis(mask: torch.Tensor, shape: torch.Size) -> tuple[int, torch.Tensor] | None:
        """A column or row mask (one kept set per batch row, the same count in each) as
        ``(axis, sorted kept indices (b, k))``: the values then move with one gather or
        scatter along that axis instead of through a full-size expanded mask."""
        b, n, d = shape
        if mask.dim() != 3 or mask.shape[0] != b:
            return None
        for axis, size in ((2, d), (1, n)):
            other = 3 - axis
            if mask.shape[other] == 1 and mask.shape[axis] == size:
                flat = mask.squeeze(other)
                counts = flat.sum(1)
                if bool((counts == counts[0]).all()):
                    return axis, flat.nonzero()[:, 1].view(b, int(counts[0]))
        return None

    @staticmethod
    def _index(axis: int, idx: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        b, n, d = shape
        k = idx.shape[1]
        return idx.unsqueeze(1).expand(b, n, k) if axis == 2 else idx.unsqueeze(2).expand(b, k, d)

    def encode(self, x: torch.Tensor, ctx: Context) -> Payload:
        g = as_3d(x.detach())
        along = self._along_axis(self._mask(ctx), g.shape)
        if along is not None:  # the same values in the same (row-major) order as masked_select
            index = self._index(*along, g.shape)
            values = ctx.empty(index.shape, g.dtype, g.device)
            torch.gather(g, along[0], index, out=values)
            return Payload([values.view(-1)], shape_header(x))
        mask = self._mask(ctx).expand_as(g)
        if g.device.type == "cpu" and g.dtype in (torch.float32, torch.float64, torch.float16):
            if not g.is_contiguous():
                g = ctx.empty(g.shape, g.dtype, g.device).copy_(g)
            flat = mask.contiguous().numpy().reshape(-1)
            kept = int(np.count_nonzero(flat))
            values = ctx.empty((kept,), g.dtype, g.device)  # numpy's compress: one pass, into the buffer
            np.compress(flat, g.numpy().reshape(-1), out=values.numpy())
            return Payload([values], shape_header(x))
        return Payload([torch.masked_select(g, mask)], shape_header(x))

    def decode(self, payload: Payload, ctx: Context) -> torch.Tensor:
        dtype, shape, _ = read_shape(payload.header)
        out = ctx.zeros(shape, dtype, payload.device)
        o = as_3d(out)
        along = self._along_axis(self._mask(ctx), o.shape)
        if along is not None:
            index = self._index(*along, o.shape)
            o.scatter_(along[0], index, part_as(payload.parts[0], dtype).view(index.shape))
            return out
        o.masked_scatter_(self._mask(ctx), part_as(payload.parts[0], dtype))
        return out
