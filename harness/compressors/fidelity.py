"""How faithful a reconstruction is.

For an instance G ∈ R^{n×d} and its reconstruction G̃: relative error, cosine similarity,
and the subspace metric ‖sin Θ(U_r, Ũ_r)‖_F between their top-r left singular vectors
(per instance, averaged over the batch). A paper's theoretical bound can be put beside
the measurement (``measure(..., bound=...)``; Beyond Top-K's are in papers/beyond_topk/bounds.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from basics.errors import ConfigError
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


@dataclass
class FidelityRow:
    compressor: str
    rate: float
    payload_bytes: int
    wire_ratio: float
    relative_error: float
    cosine: float
    sin_theta: float
    bound: float | None  # a paper's bound for this compressor, where one was given
    encode_ms: float
    decode_ms: float
    note: str = ""

    def row(self) -> dict:
        return asdict(self)


Bound = Callable[[Compressor, torch.Tensor, int], "float | None"]


def measure(
    compressor: Compressor, x: torch.Tensor, r: int, ctx: Context | None = None, bound: Bound | None = None
) -> FidelityRow:
    """One compressor on one tensor: bytes, ratio, errors, and encode/decode time (single run);
    ``bound(compressor, x, r)``, when given, is the theory's sin Θ bound to report beside it."""
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
    return FidelityRow(
        compressor.label(),
        compressor.rate,
        payload.nbytes,
        wire_ratio(x, payload),
        relative_error(x, x_hat),
        cosine(x, x_hat),
        sin_theta(x, x_hat, r),
        bound(compressor, x, r) if bound else None,
        (t1 - t0) * 1e3,
        (t3 - t2) * 1e3,
        compressor.cost_note,
    )


def synthetic_activation(
    shape: tuple[int, int, int], rank: int = 8, seed: int = 0, noise: float = 0.05
) -> torch.Tensor:
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


def load_tensor(path: Path) -> torch.Tensor:
    """A floating-point tensor of ≥ 2 dimensions saved with ``torch.save``; ConfigError otherwise."""
    if not path.is_file():
        raise ConfigError("tensor", f"{str(path)!r} not found")
    try:
        x = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch's own errors alike
        raise ConfigError(
            "tensor",
            f"{str(path)!r} is not a tensor saved with torch.save "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})",
        ) from None
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise ConfigError("tensor", "expected a floating-point tensor with at least 2 dimensions")
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise ConfigError("tensor", f"{str(path)!r} holds {bad} NaN or infinite values: fidelity needs finite ones")
    return x


def fidelity_table(
    x: torch.Tensor,
    names: list[str],
    rates: list[float],
    r: int,
    bound: Bound | None = None,
    on_compressor: Callable[[Compressor], None] | None = None,
) -> list[FidelityRow]:
    """Every compressor named (``ef:NAME`` wraps NAME) at every rate (or its own sweep values) on
    ``x``: one :func:`measure` row each. ConfigError naming ``--compressors`` or ``--rank``."""
    from harness.compressors.rates import fidelity_specs
    from harness.compressors.registry import build

    n, d = x.shape[-2], x.shape[-1]
    if not 1 <= r <= min(n, d):
        raise ConfigError("--rank", f"must be in [1, min(n, d) = {min(n, d)}]")
    try:
        specs = [s for name in names for s in fidelity_specs(name, rates)]
    except ConfigError as exc:
        raise ConfigError("--compressors", exc.message) from None
    comps = [build(s, field_name=f"--compressors {s['name']}") for s in specs]
    for c in comps:
        c.check_shape(x.shape)
    rows = []
    for c in comps:
        if on_compressor:
            on_compressor(c)
        rows.append(measure(c, x, r, bound=bound))
    return rows
