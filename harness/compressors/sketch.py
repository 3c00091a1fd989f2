"""``sketch``: compressed sensing in the spirit of Sparse Gradient Compression (SGC).

The flattened tensor is cut into chunks of ``chunk`` entries. In each chunk the sender
keeps the top-s entries (s = ``sparsity`` · m) and sends m = ⌈(1−x)·chunk⌉ measurements
y = A·v of that sparse chunk, A an m×chunk Gaussian matrix both sides derive from the
seed (never sent). The receiver recovers v by orthogonal matching pursuit (OMP).

Cost, honestly: encoding is a top-s per chunk plus a matmul; decoding runs s OMP
iterations, each a (chunks × m × chunk) matmul (the correlations: what bounds it) and an
incremental QR update of the fit — still far slower than the other compressors (see
benchmarks/compressors.py).
Only s entries per chunk survive, so at m measurements it keeps s/chunk of the entries.
"""

from __future__ import annotations

import math

import numpy as np
import torch

import harness.compressors.kernels as kernels  # not `from harness.compressors import`: a cycle
from basics.errors import ConfigError
from harness.compressors.base import Compressor, Context, check_rate, kept
from harness.compressors.shapes import read_shape, shape_header
from harness.compressors.wire import Payload

BLOCK = 1024  # chunks decoded together (their correlations and basis stay in cache)


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
        chunks = (torch.cat([flat, flat.new_zeros(pad)]) if pad else flat).view(-1, self.chunk)
        if chunks.device.type == "cpu" and self.chunk % 32 == 0 and s <= 32:  # compiled (kernels.py)
            sparse = ctx.empty(chunks.shape, torch.float32, chunks.device)
            kernels.lanes().chunk_top(chunks.numpy(), s, sparse.numpy())
        else:
            idx = chunks.abs().topk(s, dim=1).indices
            sparse = torch.zeros_like(chunks).scatter_(1, idx, chunks.gather(1, idx))
        y = sparse @ self._matrix(ctx, m, flat.device).T  # (chunks, m)
        return Payload([y.contiguous().view(-1)], shape_header(x))

    def decode(self, payload: Payload, ctx: Context) -> torch.Tensor:
        """Orthogonal matching pursuit, every chunk at once. The least-squares fit on the chosen
        atoms is kept as an incremental QR (classical Gram–Schmidt, applied twice): each new atom
        is orthogonalised against the ones chosen before, and the residual loses its component
        along it — the same fit as solving the least-squares problem again at every step, at the
        cost of a few vector operations per chunk instead of one LAPACK solve per chunk."""
        dtype, shape, _ = read_shape(payload.header)
        m, _ = self._sizes()
        a = self._matrix(ctx, m, payload.device)  # (m, chunk)
        y = payload.parts[0].view(torch.float32).view(-1, m)
        # chunks in blocks: each block's working set (correlations, basis) stays in cache
        out = torch.cat([self._pursuit(a, yb) for yb in y.split(BLOCK)])
        n = int(torch.Size(shape).numel())
        return out.view(-1)[:n].to(dtype).view(shape)

    def _pursuit(self, a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """OMP on a block of chunks' measurements y (c, m): the recovered chunks (c, chunk)."""
        m, s = self._sizes()
        c = y.shape[0]
        at = a.T.contiguous()  # (chunk, m): the atoms
        residual = y.clone()
        support = torch.zeros(c, s, dtype=torch.int64, device=y.device)
        q = torch.zeros(c, s, m, device=y.device)  # orthonormal basis of the chosen atoms, one per row
        r = torch.zeros(c, s, s, device=y.device)  # chosen atoms = (q.T @ r) per chunk, upper triangular
        corr = torch.empty(c, self.chunk, device=y.device)
        rows = torch.arange(c, device=y.device)
        for t in range(s):
            torch.matmul(residual, a, out=corr)
            corr.abs_()
            corr[rows.unsqueeze(1), support[:, :t]] = 0.0  # never pick an atom twice
            if corr.device.type == "cpu":  # numpy's argmax: a third of torch's time here
                pick = torch.from_numpy(np.argmax(corr.numpy(), axis=1))
            else:
                pick = corr.argmax(1)
            support[:, t] = pick
            w = at[pick]  # (c, m)
            for _ in range(2):  # twice: orthogonal to working precision
                proj = torch.bmm(q[:, :t], w.unsqueeze(2)).squeeze(2)  # (c, t)
                r[:, :t, t] += proj
                w = w - torch.bmm(proj.unsqueeze(1), q[:, :t]).squeeze(1)
            norm = w.norm(dim=1).clamp_min(1e-30)
            r[:, t, t] = norm
            q[:, t] = w / norm.unsqueeze(1)
            residual -= q[:, t] * (q[:, t] * residual).sum(1, keepdim=True)
        z = torch.bmm(q, y.unsqueeze(2)).squeeze(2)  # (c, s)
        coef = torch.zeros(c, s, device=y.device)
        for i in range(s - 1, -1, -1):  # back-substitution: r @ coef = q y
            coef[:, i] = (z[:, i] - (r[:, i, i + 1 :] * coef[:, i + 1 :]).sum(1)) / r[:, i, i]
        return torch.zeros(c, self.chunk, device=y.device).scatter_(1, support, coef)
