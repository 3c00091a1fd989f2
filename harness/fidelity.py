"""How faithful a reconstruction is, and the paper's bounds to put beside it.

For an instance G ∈ R^{n×d} and its reconstruction G̃: relative error, cosine similarity,
and the subspace metric ‖sin Θ(U_r, Ũ_r)‖_F between their top-r left singular vectors
(per instance, averaged over the batch), plus "Beyond Top-K" Theorem 3.2 (TopK) and
Theorem 4.1 (column masking).

On Theorem 4.1: the typeset formula puts max‖G_:,i‖ inside the square root, its discussion
and its dimensions put it outside: sqrt(2·r·x·d)·max_{i∈I}‖G_:,i‖₂ / β. We use the latter.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch

from harness.compressors.base import Compressor, Context, as_3d, wire_ratio


def relative_error(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    x, x_hat = x.double(), x_hat.double()
    return float((x - x_hat).norm() / x.norm().clamp_min(1e-300))


def cosine(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(x.double().reshape(1, -1), x_hat.double().reshape(1, -1)))


def top_left_singular(g: torch.Tensor, r: int) -> torch.Tensor:
    """(b, n, r) top-r left singular vectors of each instance."""
    u, _, _ = torch.linalg.svd(as_3d(g).double(), full_matrices=False)
    return u[:, :, :r]


def sin_theta(x: torch.Tensor, x_hat: torch.Tensor, r: int) -> float:
    """‖sin Θ(U_r, Ũ_r)‖_F = sqrt(r − ‖U_rᵀŨ_r‖_F²), averaged over instances."""
    u, uh = top_left_singular(x, r), top_left_singular(x_hat, r)
    overlap = (u.transpose(1, 2) @ uh).square().sum((1, 2))
    return float((r - overlap).clamp_min(0).sqrt().mean())


def spectral_floor(g: torch.Tensor, r: int) -> torch.Tensor:
    """β per instance: the r-th singular value."""
    return torch.linalg.svdvals(as_3d(g).double())[:, r - 1]


def topk_bound(x: torch.Tensor, rate: float, r: int, c: float = 1.0) -> float:
    """Theorem 3.2: C·σ·sqrt(r·x·n·d/β²)·sqrt(log(2/(1−x))), C=1 (the universal constant is unknown)."""
    g = as_3d(x).double()
    _, n, d = g.shape
    sigma = g.std(dim=(1, 2))
    beta = spectral_floor(g, r)
    bound = c * sigma * torch.sqrt(r * rate * n * d / beta.square()) * math.sqrt(math.log(2 / (1 - rate)))
    return float(bound.mean())


def column_bound(x: torch.Tensor, rate: float, r: int) -> float:
    """Theorem 4.1: sqrt(2·r·x·d)·max masked column norm/β, per instance, averaged."""
    g = as_3d(x).double()
    _, _, d = g.shape
    norms = g.norm(dim=1)  # (b, d)
    n_masked = d - max(1, math.ceil((1 - rate) * d - 1e-9))
    if n_masked == 0:
        return 0.0
    masked_max = norms.sort(dim=1).values[:, n_masked - 1]  # largest among the masked (smallest) columns
    beta = spectral_floor(g, r)
    return float((math.sqrt(2 * r * rate * d) * masked_max / beta).mean())


@dataclass
class FidelityRow:
    compressor: str
    rate: float
    payload_bytes: int
    wire_ratio: float
    relative_error: float
    cosine: float
    sin_theta: float
    bound: float | None  # the paper's bound for this compressor, where it has one
    encode_ms: float
    decode_ms: float
    note: str = ""

    def row(self) -> dict:
        return asdict(self)


def measure(compressor: Compressor, x: torch.Tensor, r: int, ctx: Context | None = None) -> FidelityRow:
    """One compressor on one tensor: bytes, ratio, errors, and encode/decode time (single run)."""
    from harness.compressors.wire import Payload

    ctx = ctx or Context()
    t0 = time.perf_counter()
    payload = compressor.encode(x, ctx)
    t1 = time.perf_counter()
    wire = Payload.from_bytes(payload.to_bytes())
    t2 = time.perf_counter()
    peer = Context(ctx.boundary, ctx.direction, ctx.step, ctx.seed, state={}) if compressor.receiver_state else ctx
    x_hat = compressor.decode(wire, peer)
    t3 = time.perf_counter()
    rate = compressor.rate
    bound = None
    if compressor.name == "column":
        bound = column_bound(x, rate, r)
    elif compressor.name == "topk":
        bound = topk_bound(x, rate, r)
    return FidelityRow(compressor.label(), rate, payload.nbytes, wire_ratio(x, payload), relative_error(x, x_hat),
                       cosine(x, x_hat), sin_theta(x, x_hat, r), bound, (t1 - t0) * 1e3, (t3 - t2) * 1e3,
                       compressor.cost_note)


def synthetic_activation(shape: tuple[int, int, int], rank: int = 8, seed: int = 0, noise: float = 0.05) -> torch.Tensor:
    """A (b, n, d) tensor shaped like transformer activations: a low-rank part whose columns
    (features) have log-normal scales, plus small noise. Seeded."""
    b, n, d = shape
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(b, n, rank, generator=g)
    s = torch.logspace(0, -1, rank)
    col_scale = torch.exp(torch.randn(b, 1, d, generator=g))
    v = torch.randn(b, rank, d, generator=g) * col_scale
    x = (u * s) @ v / math.sqrt(rank)
    return x + noise * x.std() * torch.randn(b, n, d, generator=g)
