"""Element-wise sparsification: ``topk`` (largest magnitudes) and ``randk`` (seeded random)."""

from __future__ import annotations

import torch

from basics.errors import ConfigError
from harness.compressors.base import Compressor, Context, as_3d, check_rate, kept
from harness.compressors.shapes import fold, read_shape, shape_header
from harness.compressors.wire import Payload, decode_positions, encode_positions, part_as


class TopK(Compressor):
    """Keep the ⌈(1−x)·N⌉ entries of largest magnitude, per instance (default) or per tensor.

    Wire: the kept values (in the tensor's dtype) and their positions as the cheaper of
    a bitmask (N bits per instance) or indices packed in ⌈log2 N⌉ bits each.
    """

    name = "topk"
    jacobian = "mask"

    def __init__(self, *, rate: float, scope: str = "instance") -> None:
        self._rate = check_rate(rate)
        if scope not in ("instance", "tensor"):
            raise ConfigError("scope", f"must be 'instance' or 'tensor', got {scope!r}")
        self.scope = scope

    def params(self) -> dict:
        return {"rate": self._rate, "scope": self.scope}

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        if self.scope == "tensor" or x.dim() < 3:
            return x.reshape(1, -1)
        return x.reshape(-1, x.shape[-2] * x.shape[-1])

    def encode(self, x: torch.Tensor, ctx: Context) -> Payload:
        flat = self._rows(x.detach())
        rows, n = flat.shape
        k = kept(self._rate, n)
        idx = flat.abs().topk(k, dim=1, sorted=False).indices.sort(dim=1).values
        pos, mode = encode_positions(idx, n)
        return Payload([flat.gather(1, idx).reshape(-1), pos], shape_header(x) + (mode, k))

    def _kept(self, payload: Payload) -> tuple[torch.dtype, tuple, int, int, int, torch.Tensor]:
        dtype, shape, (mode, k) = read_shape(payload.header)
        rows, n = self._rows(torch.empty(shape, dtype=dtype, device="meta")).shape
        return dtype, shape, rows, n, k, decode_positions(payload.parts[1], mode, rows, k, n)

    def kept_mask(self, payload: Payload, ctx: Context) -> torch.Tensor:
        _, shape, rows, n, _, idx = self._kept(payload)
        mask = torch.zeros(rows, n, dtype=torch.bool, device=payload.device)
        mask.scatter_(1, idx, True)
        return as_3d(mask.view(shape))

    def decode(self, payload: Payload, ctx: Context) -> torch.Tensor:
        dtype, shape, rows, n, k, idx = self._kept(payload)
        out = torch.zeros(rows, n, dtype=dtype, device=payload.device)
        out.scatter_(1, idx, part_as(payload.parts[0], dtype).view(rows, k))
        return out.view(shape)


class RandK(Compressor):
    """Keep ⌈(1−x)·N⌉ positions drawn from a seed both sides share: only values are sent.

    The same positions are used for every instance of the batch (one draw per step).
    ``scale: true`` multiplies by N/k (unbiased); the default keeps magnitudes as they are.
    """

    name = "randk"
    jacobian = "mask"

    def __init__(self, *, rate: float, scale: bool = False) -> None:
        self._rate = check_rate(rate)
        self.scale = bool(scale)

    def params(self) -> dict:
        return {"rate": self._rate, "scale": self.scale}

    @staticmethod
    def _positions(ctx: Context, n: int, k: int, device: torch.device) -> torch.Tensor:
        # drawn on the CPU (seeded, identical on every device and on both ends), then moved
        return torch.randperm(n, generator=ctx.generator(salt=1))[:k].sort().values.to(device)

    def encode(self, x: torch.Tensor, ctx: Context) -> Payload:
        flat = x.detach().reshape(-1, x.shape[-2] * x.shape[-1]) if x.dim() >= 3 else x.detach().reshape(1, -1)
        k = kept(self._rate, flat.shape[1])
        vals = flat[:, self._positions(ctx, flat.shape[1], k, flat.device)]
        return Payload([vals.contiguous().view(-1)], shape_header(x) + (k,))

    def kept_mask(self, payload: Payload, ctx: Context) -> torch.Tensor:
        _, shape, (k,) = read_shape(payload.header)
        n = shape[-2] * shape[-1] if len(shape) >= 3 else int(torch.Size(shape).numel())
        mask = torch.zeros(n, dtype=torch.bool, device=payload.device)
        mask[self._positions(ctx, n, k, payload.device)] = True
        _, rows_n, d = fold(shape)
        return mask.view(1, rows_n, d) if len(shape) >= 3 else as_3d(mask.view(shape))

    def vjp(self, grad: torch.Tensor, payload: Payload, ctx: Context) -> torch.Tensor:
        g = super().vjp(grad, payload, ctx)
        if self.scale:  # decode multiplies the kept values by N/k: so does its Jacobian
            _, shape, (k,) = read_shape(payload.header)
            n = shape[-2] * shape[-1] if len(shape) >= 3 else int(torch.Size(shape).numel())
            g = g * (n / k)
        return g

    def decode(self, payload: Payload, ctx: Context) -> torch.Tensor:
        dtype, shape, (k,) = read_shape(payload.header)
        n = shape[-2] * shape[-1] if len(shape) >= 3 else int(torch.Size(shape).numel())
        rows = int(torch.Size(shape).numel()) // n
        out = torch.zeros(rows, n, dtype=dtype, device=payload.device)
        vals = part_as(payload.parts[0], dtype).view(rows, k)
        out[:, self._positions(ctx, n, k, payload.device)] = vals * (n / k) if self.scale else vals
        return out.view(shape)
