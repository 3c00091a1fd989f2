"""The paper's subspace bounds: Theorem 3.2 (TopK) and Theorem 4.1 (column masking).

On Theorem 4.1: the typeset formula puts max‖G_:,i‖ inside the square root, its discussion
and its dimensions put it outside: sqrt(2·r·x·d)·max_{i∈I}‖G_:,i‖₂ / β. We use the latter.
"""

from __future__ import annotations

import math

import torch

from harness.compressors.base import Compressor, as_3d


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


def bound_for(compressor: Compressor, x: torch.Tensor, r: int) -> float | None:
    """The theorem for this compressor, where the paper has one (for ``fidelity.measure``)."""
    if compressor.name == "column":
        return column_bound(x, compressor.rate, r)
    if compressor.name == "topk":
        return topk_bound(x, compressor.rate, r)
    return None
