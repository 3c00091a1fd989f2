"""Low-rank compressors: per instance G ≈ P Qᵀ with P ∈ R^{n×r}, Q ∈ R^{d×r}.

- ``lowrank``: rank r = ⌈(1−x)·min(n, d)⌉ (or ``rank`` given), by truncated SVD
  (``method: svd``) or by power iteration warm-started from the previous step's Q
  (``method: power``, PowerSGD-style; the sender keeps Q, the receiver needs no state).
- ``lowrank_adaptive``: the rank of each instance from its spectrum: keep σ_k with
  σ_k/σ_1 ≥ ``threshold`` (at most ``max_rank``).
"""

from __future__ import annotations

import math

import torch

from basics.errors import ConfigError
from harness.compressors.base import Compressor, Context, as_3d, check_rate, kept
from harness.compressors.shapes import fold, read_shape, shape_header
from harness.compressors.wire import Payload


class LowRank(Compressor):
    name = "lowrank"
    rate_instead = ("rank",)
    stateful = True  # (power method) warm start on the sender
    jacobian = "projection"
    cost_note = "svd: O(n·d·min(n,d)) per instance; power: O(n·d·r·iters)"

    def __init__(
        self, *, rate: float | None = None, rank: int | None = None, method: str = "svd", iters: int = 1
    ) -> None:
        if (rate is None) == (rank is None):
            raise ConfigError("rate", "give exactly one of 'rate' (fraction of rank removed) or 'rank'")
        self._rate = check_rate(rate) if rate is not None else float("nan")
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
            raise ConfigError("rank", f"must be a positive integer, got {rank!r}")
        self.rank = rank
        if method not in ("svd", "power"):
            raise ConfigError("method", f"must be 'svd' or 'power', got {method!r}")
        self.method = method
        self.iters = int(iters)

    def params(self) -> dict:
        return {"rate": self._rate, "rank": self.rank, "method": self.method, "iters": self.iters}

    def target_rank(self, n: int, d: int) -> int:
        return self.rank if self.rank is not None else kept(self._rate, min(n, d))

    def check_shape(self, shape: torch.Size | tuple[int, ...]) -> None:
        _, n, d = fold(tuple(shape))
        if self.rank is not None and self.rank > min(n, d):
            raise ConfigError(
                "rank", f"{self.rank} is larger than min(n, d) = {min(n, d)} for tensors of shape {tuple(shape)}"
            )

    def encode(self, x: torch.Tensor, ctx: Context) -> Payload:
        self.check_shape(x.shape)
        g = as_3d(x.detach()).float()
        b, n, d = g.shape
        r = self.target_rank(n, d)
        if self.method == "svd":
            u, s, vh = torch.linalg.svd(g, full_matrices=False)
            p, q = u[:, :, :r] * s[:, None, :r], vh[:, :r, :].transpose(1, 2)
        else:
            q = ctx.state.get("q")
            if q is None or q.shape != (b, d, r):
                q = torch.randn(b, d, r, generator=ctx.generator(salt=3)).to(g.device)  # seeded on the CPU
            for _ in range(self.iters):
                p = torch.linalg.qr(g @ q).Q
                q = g.transpose(1, 2) @ p
            ctx.state["q"] = q
        return Payload(
            [p.to(x.dtype).contiguous().view(-1), q.to(x.dtype).contiguous().view(-1)], shape_header(x) + (r,)
        )

    def decode(self, payload: Payload, ctx: Context) -> torch.Tensor:
        dtype, shape, (r,) = read_shape(payload.header)
        b, n, d = fold(shape)
        p = payload.parts[0].view(dtype).view(b, n, r).float()
        q = payload.parts[1].view(dtype).view(b, d, r).float()
        out = ctx.empty((b, n, d), torch.float32, payload.device)
        torch.matmul(p, q.transpose(1, 2), out=out)  # into the boundary's buffer
        return (out if dtype == torch.float32 else out.to(dtype)).view(shape)

    def vjp(self, grad: torch.Tensor, payload: Payload, ctx: Context) -> torch.Tensor:
        """Both methods send x̃ = U Uᵀ x with U an orthonormal basis of P's columns (svd: the
        top-r left singular vectors; power: P itself). With U held fixed that is a linear
        map, symmetric, so the gradient goes back through the same projection: U Uᵀ g."""
        dtype, shape, (r,) = read_shape(payload.header)
        b, n, _ = fold(shape)
        u = torch.linalg.qr(payload.parts[0].view(dtype).view(b, n, r).float()).Q
        g = as_3d(grad).float()
        out = torch.matmul(u, u.transpose(1, 2) @ g, out=ctx.empty(g.shape, torch.float32, g.device))
        return out.to(grad.dtype).view(grad.shape)


class AdaptiveLowRank(Compressor):
    name = "lowrank_adaptive"
    sweep = {"threshold": (0.5, 0.2, 0.05)}
    cost_note = "full SVD per instance"

    def __init__(self, *, threshold: float = 0.1, max_rank: int | None = None) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 < threshold < 1:
            raise ConfigError("threshold", f"σ_k/σ_1 threshold must be in (0, 1), got {threshold!r}")
        self.threshold = float(threshold)
        if max_rank is not None and (not isinstance(max_rank, int) or max_rank < 1):
            raise ConfigError("max_rank", f"must be a positive integer, got {max_rank!r}")
        self.max_rank = max_rank
        self._rate = math.nan  # data-dependent: measure the wire ratio instead

    def params(self) -> dict:
        return {"threshold": self.threshold, "max_rank": self.max_rank}

    def encode(self, x: torch.Tensor, ctx: Context) -> Payload:
        g = as_3d(x.detach()).float()
        u, s, vh = torch.linalg.svd(g, full_matrices=False)
        ranks = (s >= self.threshold * s[:, :1]).sum(1).clamp(min=1)
        if self.max_rank is not None:
            ranks = ranks.clamp(max=self.max_rank)
        ps, qs = [], []
        for i, r in enumerate(ranks.tolist()):
            ps.append((u[i, :, :r] * s[i, :r]).reshape(-1))
            qs.append(vh[i, :r, :].T.reshape(-1))
        return Payload([ranks.to(torch.int16), torch.cat(ps).to(x.dtype), torch.cat(qs).to(x.dtype)], shape_header(x))

    def decode(self, payload: Payload, ctx: Context) -> torch.Tensor:
        dtype, shape, _ = read_shape(payload.header)
        b, n, d = fold(shape)
        ranks = payload.parts[0].view(torch.int16).tolist()
        p_all, q_all = payload.parts[1].view(dtype).float(), payload.parts[2].view(dtype).float()
        out = torch.empty(b, n, d, device=payload.device)
        po = qo = 0
        for i, r in enumerate(ranks):
            p = p_all[po : po + n * r].view(n, r)
            q = q_all[qo : qo + d * r].view(d, r)
            out[i] = p @ q.T
            po += n * r
            qo += d * r
        return out.to(dtype).view(shape)
