"""Structured sparsification (the paper's): keep whole columns (features) or rows (tokens).

Per instance G ∈ R^{n×d}: ``column`` keeps the ⌈(1−x)·d⌉ columns with the largest ℓ2
norm and sends their values and indices; ``row`` does the same over the n tokens.
"""

from __future__ import annotations

import numpy as np
import torch

import harness.compressors.kernels as kernels  # not `from harness.compressors import`: a cycle
from harness.compressors.base import Compressor, Context, as_3d, by_instance, check_rate, kept
from harness.compressors.shapes import fold, read_shape, shape_header
from harness.compressors.wire import Payload, decode_positions, encode_positions, part_as

CHUNK_BYTES = 1 << 22  # temporaries of ~4 MB stay in cache; one 67 MB square() would not


def squared_norms(g: torch.Tensor, axis: int, ctx: Context | None = None) -> torch.Tensor:
    """Squared ℓ2 norms of the columns (axis=2) or rows (axis=1) of each (n×d) instance, in fp32.

    Computed in slices whose square lands in one reused scratch buffer, so no tensor-sized
    temporary is allocated (that alone costs more than the reduction: fresh pages fault in)."""
    b, n, d = g.shape
    if axis == 1:  # a contiguous reduction: fast as it is
        return torch.linalg.vector_norm(g, dim=2, dtype=torch.float32).square()
    acc = torch.zeros(b, d, device=g.device)
    step = max(1, CHUNK_BYTES // max(1, b * d * 4))
    scratch = (ctx or Context()).empty((b, step, d), torch.float32, g.device)
    for part in g.split(step, dim=1):
        sq = scratch[:, : part.shape[1]]
        torch.square(part.float(), out=sq)
        acc += sq.sum(1)
    return acc


def _columns_in_cache(g: torch.Tensor, k: int, vals: torch.Tensor) -> torch.Tensor:
    """Each (n×d) fp32 instance's k columns of largest ℓ2 norm, their values copied into
    ``vals`` (b, n, k): (b, k) sorted indices. Instance by instance (compiled kernels), so the
    gather reads what the norms just brought into cache: the tensor crosses memory once. (The
    norms are summed row after row, as numpy's einsum sums them, in another order than
    :func:`squared_norms`: a choice can differ only between columns whose squared norms agree to
    within fp32 rounding.)"""
    b, _, d = g.shape
    norms = torch.empty(b, d, device=g.device)
    idx = torch.empty(b, k, dtype=torch.long, device=g.device)
    gn, nn, xn, vn = g.numpy(), norms.numpy(), idx.numpy(), vals.numpy()
    # compiled where contiguous; a strided g (a gradient autograd hands over transposed) keeps
    # numpy's einsum and torch's gather, which read it in its own order (the kernels ran 2x
    # slower on it, a copy first cost more than that): the same sums either way
    compiled = g.is_contiguous()
    column_norms, gather = kernels.column_norms(), kernels.gather_columns()
    for i in range(b):
        if compiled:
            column_norms(gn[i], nn[i])
        else:
            np.einsum("nd,nd->d", gn[i], gn[i], out=nn[i])
        idx[i] = norms[i].topk(k, sorted=False).indices.sort().values
        if compiled:
            gather(gn[i : i + 1], xn[i : i + 1], vn[i : i + 1])
        else:
            torch.index_select(g[i], 1, idx[i], out=vals[i])
    return idx


class _AxisMask(Compressor):
    axis: int  # 2: columns (features), 1: rows (tokens) of the (b, n, d) view
    jacobian = "mask"

    def __init__(self, *, rate: float) -> None:
        self._rate = check_rate(rate)

    def params(self) -> dict:
        return {"rate": self._rate}

    def encode(self, x: torch.Tensor, ctx: Context) -> Payload:
        g = as_3d(x.detach())
        b, n, d = g.shape
        size = g.shape[self.axis]
        k = kept(self._rate, size)
        vals = ctx.empty((b, n, k) if self.axis == 2 else (b, k, d), g.dtype, g.device)
        if self.axis == 2 and g.dtype == torch.float32 and by_instance(g):
            idx = _columns_in_cache(g, k, vals)  # (rows: one contiguous reduction is faster as it is)
        else:
            norms = squared_norms(g, self.axis, ctx)  # (b, size)
            idx = norms.topk(k, dim=1, sorted=False).indices.sort(dim=1).values
            for i in range(b):  # each instance's kept columns (rows): one index_select, into the buffer
                torch.index_select(g[i], self.axis - 1, idx[i], out=vals[i])
        pos, mode = encode_positions(idx, size)
        return Payload([vals.view(-1), pos], shape_header(x) + (mode, k))

    def _kept(self, payload: Payload) -> tuple[torch.dtype, tuple, tuple[int, int, int], int, torch.Tensor]:
        dtype, shape, (mode, k) = read_shape(payload.header)
        b, n, d = fold(shape)
        return dtype, shape, (b, n, d), k, decode_positions(payload.parts[1], mode, b, k, (b, n, d)[self.axis])

    def decodes_kept_exactly(self) -> bool:
        return True

    def kept_mask(self, payload: Payload, ctx: Context) -> torch.Tensor:
        _, _, (b, n, d), _, idx = self._kept(payload)
        mask = torch.zeros(b, (b, n, d)[self.axis], dtype=torch.bool, device=payload.device)
        mask.scatter_(1, idx, True)
        return mask.unsqueeze(1) if self.axis == 2 else mask.unsqueeze(2)

    def decode(self, payload: Payload, ctx: Context) -> torch.Tensor:
        dtype, shape, (b, n, d), k, idx = self._kept(payload)
        vals = part_as(payload.parts[0], dtype)
        if by_instance(vals) and not (vals.requires_grad and torch.is_grad_enabled()):
            out = ctx.empty((b, n, d), dtype, payload.device)
            v = vals.view((b, n, k) if self.axis == 2 else (b, k, d))
            streams = dtype == torch.float32 and out.data_ptr() % 32 == 0 and d % 8 == 0
            if streams:  # compiled, each output row written once with non-temporal stores
                scatter = kernels.lanes().scatter_columns if self.axis == 2 else kernels.lanes().scatter_rows
                scatter(v.numpy(), idx.numpy(), out.numpy())
                return out.view(shape)
            if self.axis == 2 and dtype == torch.float32:  # row by row, compiled: zeros and values in cache
                kernels.scatter_columns()(v.numpy(), idx.numpy(), out.numpy())
                return out.view(shape)
            # instance by instance: its zeros are still in cache when its kept columns (rows) land
            for i in range(b):  # columns: a scatter (faster here than index_copy); rows: whole-row copies
                if self.axis == 2:
                    out[i].zero_().scatter_(1, idx[i].expand(n, k), v[i])
                else:
                    out[i].zero_().index_copy_(0, idx[i], v[i])
            return out.view(shape)
        out = ctx.zeros((b, n, d), dtype, payload.device)  # one differentiable scatter (runtime: torch)
        if self.axis == 2:
            out.scatter_(2, idx.unsqueeze(1).expand(b, n, k), vals.view(b, n, k))
        else:
            out.scatter_(1, idx.unsqueeze(2).expand(b, k, d), vals.view(b, k, d))
        return out.view(shape)


class ColumnMask(_AxisMask):
    name = "column"
    axis = 2


class RowMask(_AxisMask):
    name = "row"
    axis = 1
