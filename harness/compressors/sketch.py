"""``sketch``: compressed sensing in the spirit of Sparse Gradient Compression (SGC).

The flattened tensor is cut into chunks of ``chunk`` entries. In each chunk the sender
keeps the top-s entries (s = ``sparsity`` · m) and sends m = ⌈(1−x)·chunk⌉ measurements
y = A·v of that sparse chunk, A an m×chunk Gaussian matrix both sides derive from the
seed (never sent). The receiver recovers v by orthogonal matching pursuit (OMP).

Cost, honestly: encoding is a top-s per chunk plus a matmul; decoding runs s OMP
iterations, each a (chunks × m × chunk) matmul and a batched least-squares solve —
orders of magnitude slower than the other compressors (see benchmarks/compressors.py).
Only s entries per chunk survive, so at m measurements it keeps s/chunk of the entries.
"""

from __future__ import annotations

import math

import torch

from basics.errors import ConfigError
from harness.compressors.base import Compressor, Context, check_rate, kept
from harness.compressors.shapes import read_shape, shape_header
from harness.compressors.wire import Payload


class Sketch(Compressor):
    name = "sketch"
    cost_note = "decode = s OMP iterations over all chunks (slow)"

    def __init__(self, *, rate: float, chunk: int = 512, sparsity: float = 0.25) -> None:
        self._rate = check_rate(rate)
        if not isinstance(chunk, int) or chunk < 8:
            raise ConfigError("chunk", f"must be an integer ≥ 8, got {chunk!r}")
        if not 0 < sparsity <= 1:
            raise ConfigError("sparsity", f"s/m must be in (0, 1], got {sparsity!r}")
        self.chunk = chunk
        self.sparsity = float(sparsity)

    def params(self) -> dict:
        return {"rate": self._rate, "chunk": self.chunk, "sparsity": self.sparsity}

    def _sizes(self) -> tuple[int, int]:
        m = kept(self._rate, self.chunk)
        return m, max(1, math.floor(self.sparsity * m))

    def _matrix(self, ctx: Context, m: int, device: torch.device) -> torch.Tensor:
        # fixed per (seed, boundary, direction): step 0 in the derivation; drawn on the CPU, then moved
        g = Context(ctx.boundary, ctx.direction, 0, ctx.seed).generator(salt=4)
        a = torch.randn(m, self.chunk, generator=g).to(device)
        return a / a.norm(dim=0, keepdim=True)

    def encode(self, x: torch.Tensor, ctx: Context) -> Payload:
        m, s = self._sizes()
        flat = x.detach().float().reshape(-1)
        pad = (-flat.numel()) % self.chunk
        chunks = torch.cat([flat, flat.new_zeros(pad)]).view(-1, self.chunk)
        idx = chunks.abs().topk(s, dim=1).indices
        sparse = torch.zeros_like(chunks).scatter_(1, idx, chunks.gather(1, idx))
        y = sparse @ self._matrix(ctx, m, flat.device).T  # (chunks, m)
        return Payload([y.contiguous().view(-1)], shape_header(x))

    def decode(self, payload: Payload, ctx: Context) -> torch.Tensor:
        dtype, shape, _ = read_shape(payload.header)
        m, s = self._sizes()
        a = self._matrix(ctx, m, payload.device)  # (m, chunk)
        y = payload.parts[0].view(torch.float32).view(-1, m)
        c = y.shape[0]
        residual = y.clone()
        support = torch.empty(c, 0, dtype=torch.int64, device=y.device)
        coef = torch.empty(c, 0, device=y.device)
        at = a.T.contiguous()  # (chunk, m)
        for _ in range(s):
            corr = (residual @ a).abs()
            corr.scatter_(1, support, 0.0)  # never pick an atom twice
            support = torch.cat([support, corr.argmax(1, keepdim=True)], 1)
            atoms = at[support].transpose(1, 2)  # (c, m, t)
            coef = torch.linalg.lstsq(atoms, y.unsqueeze(2)).solution.squeeze(2)
            residual = y - (atoms @ coef.unsqueeze(2)).squeeze(2)
        out = torch.zeros(c, self.chunk, device=y.device).scatter_(1, support, coef)
        n = int(torch.Size(shape).numel())
        return out.view(-1)[:n].to(dtype).view(shape)
